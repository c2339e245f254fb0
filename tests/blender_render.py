"""Blender's render of a glTF asset, the independent reference for tests/test_render_blender.py.

Runs under the separate bpy interpreter (bpy 5.0.1 needs numpy < 2), NOT the project venv:

    .venv-bpy/bin/python tests/blender_render.py job.json

job.json: {"path": "<file.glb>", "out": "<file.png>", "resolution": N, "yfov_deg": a, "distance": d}.
Writes the asset at animation time 0 as an RGBA PNG, seen as pipelines.render's "front" camera
sees it: from glTF +Z at `distance`, looking at the origin, +Y up, square image, vertical field
of view `yfov_deg`.

The scene is lit by a uniform white world of strength 1 and nothing else, with Cycles on the CPU,
so a diffuse surface that sees the whole sky (any convex object) shows exactly its albedo: the
same image pipelines.render gives with ambient 1 and no directional light. Every material the
importer makes keeps its textures and colours; only its specular reflection is switched off
(Principled "Specular IOR Level" 0), which pyrender's ambient term has none of either. The view
transform is "Standard" (the plain sRGB curve), the film transparent.
"""
from __future__ import annotations

import json
import math
import sys

import bpy


def main() -> None:
    with open(sys.argv[1]) as f:
        job = json.load(f)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if bpy.ops.import_scene.gltf(filepath=job["path"]) != {"FINISHED"}:
        raise RuntimeError(f"glTF import of {job['path']} failed")
    scene = bpy.context.scene
    scene.frame_set(0)  # the importer keys glTF second t at frame t * fps: time 0

    for mat in bpy.data.materials:
        if mat.use_nodes:
            for node in mat.node_tree.nodes:
                if node.type == "BSDF_PRINCIPLED":
                    node.inputs["Specular IOR Level"].default_value = 0.0

    world = bpy.data.worlds.new("uniform")
    world.use_nodes = True
    background = world.node_tree.nodes["Background"]
    background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    background.inputs["Strength"].default_value = 1.0
    scene.world = world

    # glTF (x, y, z) is Blender (x, -z, y): the camera at glTF +Z is at Blender -Y, looking along +Y.
    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    cam.data.sensor_fit = "VERTICAL"
    cam.data.angle = math.radians(job["yfov_deg"])
    cam.data.clip_start, cam.data.clip_end = 0.01, 100.0
    cam.location = (0.0, -job["distance"], 0.0)
    cam.rotation_euler = (math.pi / 2, 0.0, 0.0)
    scene.collection.objects.link(cam)
    scene.camera = cam

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = job.get("samples", 64)
    scene.cycles.use_denoising = False
    scene.cycles.seed = 0
    scene.render.resolution_x = scene.render.resolution_y = job["resolution"]
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.render.filepath = job["out"]
    bpy.ops.render.render(write_still=True)


if __name__ == "__main__":
    main()
