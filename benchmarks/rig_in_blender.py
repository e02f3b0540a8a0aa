"""The docs' Blender walk-through for ``--rig``, done end to end in Blender (a manual check).

Blender is a large install, so this is not part of the test suite. Three steps::

    # 1. a character the way a Blender user makes one: the ICT head with ARKit-named shape keys,
    #    exported by Blender's own glTF exporter
    python benchmarks/rig_in_blender.py head /tmp/rig/head.npz
    blender -b --factory-startup --python benchmarks/rig_in_blender.py -- build /tmp/rig/head.npz /tmp/rig/character.glb
    # 2. ptalker drives it, and writes the same curves as JSON for the comparison
    ptalker animate examples/speech.wav --rig /tmp/rig/character.glb -o /tmp/rig/talking.glb
    ptalker animate examples/speech.wav --format arkit-json -o /tmp/rig/curves.json
    # 3. import the result in a new scene, play it, compare, and render one frame
    blender -b --factory-startup --python benchmarks/rig_in_blender.py -- check /tmp/rig/talking.glb \
        /tmp/rig/curves.json /tmp/rig/frame.png

Step 3 prints the imported action, its frame range, and at every motion frame the largest
difference between the shape-key values Blender plays and ptalker's ARKit curves (both in
[0, 1]); it renders the frame where ``jawOpen`` peaks with Blender's Workbench engine.
Blender's importer places keys at the scene's frame rate of the moment of import (24 frames/s
in a new scene): step 3 sets the scene to the curves' rate first, as the walk-through tells
users to, so that Blender frame k is motion frame k. ``--import-at-24`` (after the paths)
imports into a 24-frames/s scene instead and shows what the comparison then finds.
"""

import json
import sys

import numpy as np


def write_head(out: str) -> None:
    """(our Python) The ICT neutral head and one shape per ARKit name it has, in metres."""
    from ptalker_cli.arkit.names import arkit_name
    from ptalker_cli.blendshapes.basis import load_builtin_blendshapes
    from ptalker_cli.mesh import load_builtin

    topo = load_builtin("ict")
    bs = load_builtin_blendshapes("ict")
    shapes: dict[str, np.ndarray] = {}
    for name, offset in zip(bs.names, bs.offsets):
        apple = arkit_name(str(name)) or arkit_name(str(name).rsplit("_", 1)[0])  # cheekPuff_L -> cheekPuff
        shapes[apple] = shapes.get(apple, 0) + offset  # the two halves of cheekPuff / browInnerUp together
    np.savez(out, vertices=topo.vertices * 0.01, faces=topo.faces, names=np.array(list(shapes)),
             offsets=np.stack(list(shapes.values())) * 0.01)
    print(f"{out}: {topo.num_vertices} vertices, {len(shapes)} ARKit shapes")


def build(head: str, out: str) -> None:
    """(inside Blender) A mesh with ARKit-named shape keys, exported as GLB with shape keys on."""
    import bpy

    d = np.load(head)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    verts = [(x, -z, y) for x, y, z in d["vertices"]]  # glTF Y-up -> Blender Z-up
    mesh = bpy.data.meshes.new("Head")
    mesh.from_pydata(verts, [], [tuple(map(int, f)) for f in d["faces"]])
    obj = bpy.data.objects.new("Head", mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.shape_key_add(name="Basis")
    for name, off in zip(d["names"], d["offsets"]):
        key = obj.shape_key_add(name=str(name))
        co = np.asarray(verts, np.float32) + np.stack([off[:, 0], -off[:, 2], off[:, 1]], 1)
        key.data.foreach_set("co", co.ravel())
    bpy.ops.export_scene.gltf(filepath=out, export_format="GLB", export_morph=True, export_apply=False)
    print(f"{out}: exported by Blender {bpy.app.version_string} with {len(d['names'])} shape keys")


def check(glb: str, curves_json: str, png: str) -> None:
    """(inside Blender) Import, play, compare the shape-key values with the curves, render one frame."""
    import bpy

    if "bool" not in np.__dict__:  # Debian bookworm's Blender 3.4.1 importer uses np.bool (gone in numpy 1.24)
        np.bool = bool
    curves = json.load(open(curves_json))
    fps, names = float(curves["fps"]), curves["names"]
    frames = np.array([[f[n] for n in names] for f in curves["frames"]], np.float64)  # keyed by name
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    if "--import-at-24" not in sys.argv:  # walk-through step 3: the scene's rate first, then import
        scene.render.fps, scene.render.fps_base = int(round(fps)), 1.0
    bpy.ops.import_scene.gltf(filepath=glb)
    obj = next(o for o in scene.objects if o.type == "MESH")
    keys = obj.data.shape_keys
    action = keys.animation_data.action
    print(f"action {action.name!r}: frames {tuple(action.frame_range)}, {len(keys.key_blocks) - 1} shape keys")
    driven = [kb for kb in keys.key_blocks[1:] if kb.name in names]
    worst = 0.0
    start = int(action.frame_range[0])
    for t in range(len(frames)):
        scene.frame_set(start + t)
        got = np.array([kb.value for kb in driven])
        want = frames[t, [names.index(kb.name) for kb in driven]]
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"{len(driven)} shape keys driven; largest |Blender value - ARKit curve| over {len(frames)} frames: "
          f"{worst:.2e}")
    jaw = names.index("jawOpen")
    peak = int(np.argmax(frames[:, jaw]))
    scene.frame_set(start + peak)
    print(f"frame {peak}: jawOpen {keys.key_blocks['jawOpen'].value:.3f} (curve {frames[peak, jaw]:.3f})")
    _render(obj, png)


def _render(obj, png: str) -> None:
    import bpy
    from mathutils import Vector

    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = scene.render.resolution_y = 400
    scene.display.shading.light = "STUDIO"
    scene.world = bpy.data.worlds.new("World")
    scene.world.color = (0.8, 0.8, 0.8)
    corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    centre = sum(corners, Vector()) / 8
    size = max((c - centre).length for c in corners)
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(cam)
    cam.location = centre + Vector((0.0, -2.6 * size, 0.04 * size))  # in front of the face (glTF +Z is Blender -Y)
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)
    scene.camera = cam
    scene.render.filepath = png
    bpy.ops.render.render(write_still=True)
    print(f"rendered {png}")


if __name__ == "__main__":
    args = [a for a in (sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]) if a[:2] != "--"]
    {"head": write_head, "build": build, "check": check}[args[0]](*args[1:])
