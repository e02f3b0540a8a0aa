"""Offscreen render backends behind one interface.

* ``moderngl`` (default): a small two-light shader through moderngl over EGL. On a
  machine without a GPU, Mesa's EGL runs it on llvmpipe (multi-threaded software
  rasterizer); with a GPU and driver, on the GPU.
* ``pyrender``: pyrender's ``OffscreenRenderer`` with the same camera, lights and
  material; EGL when it works, OSMesa otherwise (``PYOPENGL_PLATFORM`` overrides).
  One scene is kept for the whole clip and the mesh's vertex buffer is overwritten
  each frame; pyrender's 4x multisample buffers are replaced by single-sample ones.

A renderer draws one or more *panels* (meshes with the same faces, side by side) into
one RGB frame and returns it as a (H, W * panels, 3) uint8 array, top row first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import subprocess
import sys
from functools import lru_cache
from typing import Sequence

import numpy as np

from ..errors import PtalkerError
from .scene import Camera, Lighting, Material

BACKENDS = ("moderngl", "pyrender")
RENDERER_CHOICES = ("auto",) + BACKENDS

#: What to install on Debian/Ubuntu when no backend can start.
APT_HINT = "apt-get install libegl1 libgl1 libegl-mesa0 libglx-mesa0 libgl1-mesa-dri libosmesa6"


class RendererUnavailable(PtalkerError):
    """No offscreen OpenGL backend could be started."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


class Renderer:
    """Base class: draws panels of the same topology with a fixed camera."""

    name = "base"

    def __init__(
        self,
        faces: np.ndarray,
        num_vertices: int,
        width: int,
        height: int,
        camera: Camera,
        *,
        panels: int = 1,
        background: Sequence[float] = (1.0, 1.0, 1.0),
        lighting: Lighting | None = None,
        material: Material | None = None,
    ):
        self.faces = np.ascontiguousarray(faces, dtype=np.int32)
        self.num_vertices = int(num_vertices)
        self.width = int(width)
        self.height = int(height)
        self.camera = camera
        self.panels = int(panels)
        self.background = tuple(float(c) for c in background)
        self.lighting = lighting or Lighting()
        self.material = material or Material()

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width * self.panels, 3)

    def render(
        self,
        vertices: Sequence[np.ndarray],
        normals: Sequence[np.ndarray],
        colors: Sequence[np.ndarray | None] | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Render one frame. ``vertices``/``normals``: one (V, 3) float32 array per panel;
        ``colors``: per panel None (the grey material) or (V, 3) linear RGB in [0, 1]."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- moderngl

_VERTEX_SHADER = """
#version 330
uniform mat4 u_mv;
uniform mat4 u_proj;
in vec3 in_pos;
in vec3 in_norm;
in vec3 in_color;
out vec3 v_pos;
out vec3 v_norm;
out vec3 v_color;
void main() {
    vec4 p = u_mv * vec4(in_pos, 1.0);
    v_pos = p.xyz;
    v_norm = mat3(u_mv) * in_norm;
    v_color = in_color;
    gl_Position = u_proj * p;
    gl_Position.y = -gl_Position.y;  // render upside down: glReadPixels then gives rows top first
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform vec3 u_light_dir[2];
uniform float u_light_int[2];
uniform float u_ambient;
uniform float u_specular;
uniform float u_shininess;
in vec3 v_pos;
in vec3 v_norm;
in vec3 v_color;
out vec4 f_color;
void main() {
    vec3 n = normalize(v_norm);
    vec3 v = normalize(-v_pos);
    float diffuse = u_ambient;
    float spec = 0.0;
    for (int i = 0; i < 2; ++i) {
        vec3 l = u_light_dir[i];
        float nl = dot(n, l);
        if (nl > 0.0) {
            diffuse += u_light_int[i] * nl;
            vec3 h = normalize(l + v);
            spec += u_light_int[i] * u_specular * pow(max(dot(n, h), 0.0), u_shininess);
        }
    }
    vec3 c = v_color * diffuse + vec3(spec);
    f_color = vec4(pow(clamp(c, 0.0, 1.0), vec3(1.0 / 2.2)), 1.0);
}
"""


class ModernGLRenderer(Renderer):
    """Two-light Blinn-Phong shader over an EGL context (GPU or Mesa llvmpipe)."""

    name = "moderngl"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        try:
            import moderngl
        except ImportError as exc:
            raise RendererUnavailable(
                f"the moderngl renderer needs the moderngl package ({_one_line(exc)}); "
                "run `pip install moderngl` or use --renderer pyrender"
            ) from None
        try:
            libs = {
                "libegl": os.environ.get("GLCONTEXT_LINUX_LIBEGL") or ctypes.util.find_library("EGL") or "libEGL.so.1",
                "libgl": os.environ.get("GLCONTEXT_LINUX_LIBGL") or ctypes.util.find_library("GL") or "libGL.so.1",
            }
            self.ctx = moderngl.create_context(standalone=True, backend="egl", **libs)
        except Exception as exc:
            raise RendererUnavailable(
                f"cannot start an EGL OpenGL context for moderngl ({_one_line(exc)}); "
                f"install the system packages with `{APT_HINT}` or use --renderer pyrender"
            ) from None
        ctx = self.ctx
        self.gl_renderer = ctx.info.get("GL_RENDERER", "unknown")
        self.prog = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        cam = self.camera
        self.prog["u_mv"].write(cam.view.T.astype("f4").tobytes())
        self.prog["u_proj"].write(cam.proj.T.astype("f4").tobytes())
        lights = self.lighting.lights
        dirs = np.array([_unit(li.direction) for li in lights], dtype="f4")
        self.prog["u_light_dir"].write(dirs.tobytes())
        self.prog["u_light_int"].write(np.array([li.intensity for li in lights], dtype="f4").tobytes())
        self.prog["u_ambient"].value = self.lighting.ambient
        self.prog["u_specular"].value = self.lighting.specular
        self.prog["u_shininess"].value = self.lighting.shininess
        self.ibo = ctx.buffer(self.faces.tobytes())
        nbytes = self.num_vertices * 12
        grey = np.tile(np.asarray(self.material.color, dtype="f4"), (self.num_vertices, 1))
        self._grey = grey
        self.vbos = []
        for _ in range(self.panels):
            pos = ctx.buffer(reserve=nbytes, dynamic=True)
            nrm = ctx.buffer(reserve=nbytes, dynamic=True)
            col = ctx.buffer(grey.tobytes(), dynamic=True)
            vao = ctx.vertex_array(
                self.prog,
                [(pos, "3f", "in_pos"), (nrm, "3f", "in_norm"), (col, "3f", "in_color")],
                index_buffer=self.ibo,
                index_element_size=4,
            )
            self.vbos.append([pos, nrm, col, vao, False])  # False: colour buffer holds grey
        w, h = self.width * self.panels, self.height
        self.fbo = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer((w, h), components=4)],
            depth_attachment=ctx.depth_renderbuffer((w, h)),
        )
        self.fbo.use()
        ctx.enable(moderngl.DEPTH_TEST)

    def render(self, vertices, normals, colors=None, out=None):
        self.fbo.use()
        bg = self.background
        self.fbo.clear(bg[0], bg[1], bg[2], 1.0, depth=1.0)
        for i in range(self.panels):
            pos, nrm, col, vao, custom = self.vbos[i]
            pos.write(np.ascontiguousarray(vertices[i], dtype="f4"))
            nrm.write(np.ascontiguousarray(normals[i], dtype="f4"))
            c = None if colors is None else colors[i]
            if c is not None:
                col.write(np.ascontiguousarray(c, dtype="f4"))
                self.vbos[i][4] = True
            elif custom:
                col.write(self._grey)
                self.vbos[i][4] = False
            self.fbo.viewport = (i * self.width, 0, self.width, self.height)
            vao.render()
        if out is None:
            out = np.empty(self.frame_shape, dtype=np.uint8)
        self.fbo.viewport = (0, 0, self.width * self.panels, self.height)
        self.fbo.read_into(out, components=3, alignment=1)
        return out

    def close(self):
        ctx = getattr(self, "ctx", None)
        if ctx is not None:
            try:
                ctx.release()
            except Exception:
                pass
            self.ctx = None


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# --------------------------------------------------------------------------- pyrender


def _can_load(*names: str) -> bool:
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


@lru_cache(maxsize=None)
def _probe_platform(platform: str) -> str | None:
    """Start a tiny pyrender context with ``platform`` in a subprocess; None if it works."""
    code = "import pyrender; r = pyrender.OffscreenRenderer(8, 8); r.delete()"
    env = dict(os.environ, PYOPENGL_PLATFORM=platform)
    try:
        res = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _one_line(exc)
    if res.returncode == 0:
        return None
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {res.returncode}"


def choose_pyopengl_platform() -> str:
    """The PyOpenGL platform for pyrender: ``PYOPENGL_PLATFORM`` if set, else EGL if it
    starts, else OSMesa. Sets the variable (PyOpenGL reads it once, at import)."""
    env = os.environ.get("PYOPENGL_PLATFORM")
    if env:
        return env
    if "OpenGL.GL" in sys.modules:  # PyOpenGL already bound to its default platform
        if os.environ.get("DISPLAY"):
            return "default"  # pyrender's pyglet platform (a hidden window) can work
        raise RendererUnavailable(
            "PyOpenGL was imported before ptalker could choose a headless platform; set "
            "PYOPENGL_PLATFORM=egl (or osmesa) before starting Python"
        )
    errors = []
    for platform, libs in (("egl", ("libEGL.so.1", "libEGL.so")), ("osmesa", ("libOSMesa.so.8", "libOSMesa.so"))):
        if not _can_load(*libs):
            errors.append(f"{platform}: {libs[0]} not found")
            continue
        err = _probe_platform(platform)
        if err is None:
            os.environ["PYOPENGL_PLATFORM"] = platform
            return platform
        errors.append(f"{platform}: {err}")
    raise RendererUnavailable(
        f"pyrender found no working offscreen OpenGL ({'; '.join(errors)}); install the system "
        f"packages with `{APT_HINT}`"
    )


class PyrenderRenderer(Renderer):
    """pyrender's PBR shader, one persistent scene, vertex buffer overwritten per frame."""

    name = "pyrender"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.platform = choose_pyopengl_platform()
        try:
            import pyrender
            from pyrender.constants import RenderFlags
        except Exception as exc:
            raise RendererUnavailable(
                f"cannot import pyrender ({_one_line(exc)}); install the system packages with "
                f"`{APT_HINT}` and `pip install pyrender`"
            ) from None
        self._flags = RenderFlags.SKIP_CULL_FACES | RenderFlags.OFFSCREEN
        try:
            self.r = pyrender.OffscreenRenderer(self.width, self.height)
        except ImportError as exc:
            if "OSMesaCreateContextAttribs" in str(exc):
                raise RendererUnavailable(
                    "pyrender's OSMesa mode needs PyOpenGL >= 3.1.5 but pyrender pins 3.1.0; run "
                    "`pip install --no-deps PyOpenGL==3.1.7`, or use EGL (PYOPENGL_PLATFORM=egl)"
                ) from None
            raise RendererUnavailable(
                f"pyrender cannot start PYOPENGL_PLATFORM={self.platform} ({_one_line(exc)}); install the "
                f"system packages with `{APT_HINT}`"
            ) from None
        except Exception as exc:
            raise RendererUnavailable(
                f"pyrender cannot start an offscreen OpenGL context with PYOPENGL_PLATFORM="
                f"{self.platform} ({_one_line(exc)}); install the system packages with `{APT_HINT}` "
                "or set PYOPENGL_PLATFORM=osmesa"
            ) from None
        _single_sample(self.r._renderer)
        lit = self.lighting
        cam = self.camera
        pose = cam.pose
        self.scenes = []
        self.prims = []
        grey = np.asarray(self.material.color, dtype=np.float32)
        for _ in range(self.panels):
            scene = pyrender.Scene(bg_color=[*self.background, 1.0], ambient_light=[lit.ambient] * 3)
            scene.add(
                pyrender.PerspectiveCamera(yfov=cam.yfov, znear=cam.znear, zfar=cam.zfar, aspectRatio=cam.aspect),
                pose=pose,
            )
            for light in lit.lights:
                d_world = pose[:3, :3] @ _unit(light.direction)
                lpose = np.eye(4)
                lpose[:3, :3] = _frame_with_z(d_world)
                # pyrender's diffuse term is albedo/pi * intensity; scale by pi to match ours
                scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=light.intensity * math.pi), pose=lpose)
            material = pyrender.MetallicRoughnessMaterial(
                baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=self.material.roughness
            )
            pos = np.zeros((self.num_vertices, 3), dtype=np.float32)
            nrm = np.tile(np.array([0, 0, 1], dtype=np.float32), (self.num_vertices, 1))
            col = np.concatenate([np.tile(grey, (self.num_vertices, 1)),
                                  np.ones((self.num_vertices, 1), np.float32)], 1)
            prim = pyrender.Primitive(
                positions=pos, normals=nrm, color_0=col, indices=self.faces, material=material, mode=4
            )
            scene.add(pyrender.Mesh([prim]))
            self.scenes.append(scene)
            self.prims.append(prim)
        self._grey_rgba = col
        # draw each scene once so pyrender creates its GPU buffers and shader programs
        for scene in self.scenes:
            self.r.render(scene, flags=self._flags)
        self._interleaved = np.empty((self.num_vertices, 10), dtype=np.float32)
        self._interleaved[:, 6:] = self._grey_rgba

    def render(self, vertices, normals, colors=None, out=None):
        from OpenGL import GL

        r = self.r
        r._platform.make_current()
        frames = []
        for i in range(self.panels):
            prim = self.prims[i]
            buf = self._interleaved
            buf[:, 0:3] = vertices[i]
            buf[:, 3:6] = normals[i]
            c = None if colors is None else colors[i]
            if c is None:
                buf[:, 6:9] = self._grey_rgba[:, :3]
            else:
                buf[:, 6:9] = c
            GL.glBindBuffer(GL.GL_ARRAY_BUFFER, prim._buffers[0])
            GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, buf.nbytes, buf)
            color, _depth = r._renderer.render(self.scenes[i], self._flags)
            frames.append(color)
        img = frames[0] if len(frames) == 1 else np.concatenate(frames, axis=1)
        if out is None:
            return np.ascontiguousarray(img)
        out[...] = img
        return out

    def close(self):
        r = getattr(self, "r", None)
        if r is not None:
            try:
                r.delete()
            except Exception:
                pass
            self.r = None


def _frame_with_z(z: np.ndarray) -> np.ndarray:
    """A rotation whose third column is ``z``."""
    z = _unit(z)
    helper = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = _unit(np.cross(helper, z))
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def _single_sample(renderer) -> None:
    """Make pyrender's renderer use single-sample colour/depth buffers (no 4x MSAA).

    pyrender always renders into a 4x multisampled framebuffer and resolves it with a
    blit; on a software rasterizer that multisampling is most of the cost. Here both
    framebuffers get single-sample storage, so the resolve blit is a plain copy.
    """
    from OpenGL import GL

    orig = renderer._configure_main_framebuffer

    def configure():
        if renderer._main_fb is not None and renderer._main_fb_dims == (
            renderer.viewport_width,
            renderer.viewport_height,
        ):
            return
        real = GL.glRenderbufferStorageMultisample
        import pyrender.renderer as prmod

        def no_ms(target, samples, fmt, w, h):
            GL.glRenderbufferStorage(target, fmt, w, h)

        prmod.glRenderbufferStorageMultisample = no_ms
        try:
            orig()
        finally:
            prmod.glRenderbufferStorageMultisample = real

    renderer._configure_main_framebuffer = configure


# --------------------------------------------------------------------------- factory


def create_renderer(
    renderer: str,
    faces: np.ndarray,
    num_vertices: int,
    width: int,
    height: int,
    camera: Camera,
    **kwargs,
) -> Renderer:
    """Start the named backend; ``auto`` tries moderngl, then pyrender."""
    if renderer not in RENDERER_CHOICES:
        raise PtalkerError(f"unknown renderer '{renderer}'; use one of: {', '.join(RENDERER_CHOICES)}")
    classes = {"moderngl": ModernGLRenderer, "pyrender": PyrenderRenderer}
    order = BACKENDS if renderer == "auto" else (renderer,)
    errors = []
    for name in order:
        try:
            return classes[name](faces, num_vertices, width, height, camera, **kwargs)
        except RendererUnavailable as exc:
            errors.append(str(exc))
    if len(errors) == 1:
        raise RendererUnavailable(errors[0])
    raise RendererUnavailable(
        f"no render backend could start (moderngl and pyrender both failed); install the system "
        f"packages with `{APT_HINT}` (details: {' | '.join(e[:150] for e in errors)})"
    )
