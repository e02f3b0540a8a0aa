"""Import a ptalker GLB into Blender and compare the played shape keys with the motion (a manual check).

Run inside Blender (not part of the test suite: Blender is a large install)::

    ptalker animate examples/speech.wav -o out.glb && ptalker animate examples/speech.wav -o out.npy
    blender -b --factory-startup --python benchmarks/glb_in_blender.py -- out.glb out.npy

Prints the shape keys and their slider ranges, the imported action, and at a few motion
frames the largest distance (mm) between Blender's evaluated mesh and the motion. Blender
keeps its scene at 24 frames/s, so key *k* (at *k* / fps seconds) is compared at the nearest
whole Blender frame: the figures include up to half a Blender frame of motion.
"""

import sys

import bpy
import numpy as np

if not hasattr(np, "bool"):  # Debian bookworm's Blender 3.4.1 importer still uses np.bool (gone in numpy 1.24)
    np.bool = bool

glb, motion_path = sys.argv[sys.argv.index("--") + 1:][:2]
motion = np.load(motion_path)  # (T, V, 3), centimetres for the ICT head
fps_motion = 25.0
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=glb)
obj = next(o for o in bpy.context.scene.objects if o.type == "MESH")
keys = obj.data.shape_keys
action = keys.animation_data.action
scene = bpy.context.scene
fps = scene.render.fps / scene.render.fps_base
print("shape keys:", [(kb.name, kb.slider_min, kb.slider_max) for kb in keys.key_blocks[1:]])
print("action:", action.name, "frames", tuple(action.frame_range), "scene fps", fps)
unit = 0.01  # model units (cm) -> metres
for k in (0, len(motion) // 3, len(motion) // 2, len(motion) - 1):
    scene.frame_set(int(round(k / fps_motion * fps)))
    mesh = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
    co = np.array([v.co[:] for v in mesh.vertices])
    world = np.array(obj.matrix_world)
    pts = co @ world[:3, :3].T + world[:3, 3]
    gltf = np.stack([pts[:, 0], pts[:, 2], -pts[:, 1]], 1)  # Blender is Z-up; glTF (and the motion) Y-up
    err = np.linalg.norm(gltf - motion[k] * unit, axis=1) * 1000
    print(f"motion frame {k} (Blender frame {scene.frame_current}): max {err.max():.3f} mm")
