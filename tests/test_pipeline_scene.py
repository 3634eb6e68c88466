import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from iterview.geometry.cameras import linear_to_zbuffer
from iterview.geometry.inference import OFFICIAL_GEOMETRY, InferenceGeometry
from iterview.geometry.mesh import FLAG_EDGE, FLAG_PADDING, rgbd_to_mesh
from iterview.io import atomic_path, colorize_depth, make_grid, to_uint8
from iterview.pipeline.scene import Scene
from iterview.pipeline.viewsets import grid_viewset_3x9


def make_scene(views=3, size=16, known=True):
    generator = torch.Generator().manual_seed(1)
    rgb = torch.rand(views, 3, size, size, generator=generator) * 2 - 1
    depth = linear_to_zbuffer(0.8 + 0.4 * torch.rand(views, 1, size, size, generator=generator), 0.6, 5.0) * 2 - 1
    mask = torch.rand(views, 1, size, size, generator=generator) > 0.5 if known else None
    return Scene(torch.cat([rgb, depth], 1), grid_viewset_3x9().modelviews[:views], label=7, seed=42, known=mask)


def test_scene_round_trip_is_exact_and_pickle_free(tmp_path):
    scene = make_scene()
    path = scene.save(tmp_path / "scene_class007_seed00042")
    assert path == tmp_path / "scene_class007_seed00042.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "scene_class007_seed00042.json",
        "scene_class007_seed00042.npz",
    ]
    with np.load(path, allow_pickle=False) as data:
        assert data["rgbd"].dtype == np.float32 and data["known"].dtype == bool
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["views"] == 3 and meta["label"] == 7 and meta["seed"] == 42 and len(meta["modelviews"]) == 3
    loaded = Scene.load(path.with_suffix(".json"))
    assert torch.equal(loaded.rgbd, scene.rgbd)
    assert torch.equal(loaded.modelviews, scene.modelviews)
    assert torch.equal(loaded.known, scene.known)
    assert (loaded.label, loaded.seed, loaded.near, loaded.far, loaded.fov) == (7, 42, 0.6, 5.0, 45.0)
    assert Scene.load(tmp_path / "scene_class007_seed00042").known is not None
    assert loaded.info is None and "info" not in meta
    scene.info = {"lift": {"photo": "a.jpg", "depth": {"file": "a.npz", "kind": "depth"}}}
    assert Scene.load(scene.save(tmp_path / "with_info")).info == scene.info


def test_scene_files_record_the_inference_geometry(tmp_path):
    geometry = InferenceGeometry.for_size(16)
    scene = make_scene()
    scene.geometry = geometry
    scene.save(tmp_path / "s")
    assert json.loads((tmp_path / "s.json").read_text())["geometry"]["atol"] == geometry.atol
    assert Scene.load(tmp_path / "s").geometry == geometry


def test_version_1_scene_files_load_with_the_official_geometry(tmp_path):
    scene = make_scene()
    scene.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old.json").read_text())
    del meta["geometry"]
    meta.update(version=1, fov=45.0, near=0.6, far=5.0)
    (tmp_path / "old.json").write_text(json.dumps(meta))
    assert Scene.load(tmp_path / "old").geometry == OFFICIAL_GEOMETRY
    meta["geometry"] = {"atol": "loose"}
    (tmp_path / "old.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"old\.json: bad inference geometry"):
        Scene.load(tmp_path / "old")


def test_scene_meshes_follow_the_scene_geometry():
    """The tolerances a scene was sampled with are the ones its meshes are cut with."""
    scene = make_scene(views=1)
    strict = scene.meshes()[0][0].flag
    scene.geometry = InferenceGeometry(atol=10.0, rtol=10.0)
    loose = scene.meshes()[0][0].flag
    assert (strict & FLAG_EDGE).any() and not (loose & FLAG_EDGE).any()


def test_scene_to_keeps_every_field():
    scene = make_scene()
    scene.geometry = InferenceGeometry.for_size(16)
    moved = scene.to("cpu")
    assert (moved.geometry, moved.label, moved.seed) == (scene.geometry, 7, 42)
    assert torch.equal(moved.known, scene.known)


def test_scene_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="scene file not found"):
        Scene.load(tmp_path / "nothing")
    make_scene(known=False).save(tmp_path / "s")
    (tmp_path / "s.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"s\.npz"):
        Scene.load(tmp_path / "s")
    make_scene().save(tmp_path / "t")
    (tmp_path / "t.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        Scene.load(tmp_path / "t")
    with pytest.raises(ValueError, match=r"\(V, 4, N, N\)"):
        Scene(torch.zeros(2, 3, 8, 8), torch.eye(4).expand(2, 4, 4))
    with pytest.raises(ValueError, match="modelviews"):
        Scene(torch.zeros(2, 4, 8, 8), torch.eye(4).expand(3, 4, 4))


def test_scene_meshes_use_the_official_fusion_padding():
    scene = make_scene(views=2, size=16)
    meshes, textures = scene.meshes()
    assert len(meshes) == 2 and meshes[0].position.shape == (1, 18 * 18, 3)
    assert (meshes[0].flag.reshape(18, 18)[0] & FLAG_PADDING).all()
    assert torch.allclose(textures[1], scene.rgbd[1:2, :3] * 0.5 + 0.5)
    assert scene.depth.shape == (2, 1, 16, 16)


def test_sampling_mesh_matches_the_official_mesh(reference):
    """rgbd_to_mesh on the official inference RGBD gives the official sampling mesh (frustum skirt, normals)."""
    data = load_file(str(reference / "warping" / "warping.safetensors"))
    rgbd = data["infer_rgbd0"].permute(2, 0, 1)[None] * 2 - 1
    mesh, texture = rgbd_to_mesh(rgbd, data["source0_modelview"][None])
    assert torch.equal(mesh.faces[0], data["agg_mesh0_faces"])
    assert torch.equal(mesh.flag[0], data["agg_mesh0_flag"][:, 0].long())
    assert torch.allclose(mesh.position[0], data["agg_mesh0_position"], atol=1e-5)
    assert torch.allclose(mesh.normal[0], data["agg_mesh0_normal"], atol=1e-4)
    assert torch.allclose(texture[0], data["infer_rgbd0"][..., :3].permute(2, 0, 1), atol=1e-6)


def test_image_helpers(tmp_path):
    assert to_uint8(torch.tensor([[[0.0, 0.999, 1.5, -0.2]]])).tolist() == [[[0], [254], [255], [0]]]
    near, far = colorize_depth(torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1))
    assert near.sum() > 2.0 and far.sum() < 0.1  # inverted inferno: near is bright, far is black
    images = torch.arange(3.0).reshape(3, 1, 1, 1)
    assert make_grid(images, ((2, 0), (-1, 1))).tolist() == [[[2.0, 0.0], [0.0, 1.0]]]
    target = tmp_path / "file.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
