"""The page: Generate, Lift, Explore and Download tabs over the handlers, built with Gradio (imported only here,
so the rest of iterview works without the `app` extra)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from iterview.webapp import handlers
from iterview.webapp.handlers import AppModels, GenerateOptions, LiftOptions, RenderSettings, SceneOutputs
from iterview.webapp.jobs import Done, Failed, JobQueue, Progress, Report

TITLE = "iterview"
INTRO = (
    "Generate a 3D-aware scene view by view, lift a photo, turn the camera around a fused scene and download it. "
    "One job runs at a time; later ones wait their turn."
)
AUTO_CLASS = "seed mod classes"
GRID_HEIGHT, VIDEO_HEIGHT = 240, 320


def parse_class(value: str | None) -> int | None:
    """The class dropdown's value -> a label, or None for `seed mod classes`."""
    return None if value in (None, "", AUTO_CLASS) else int(value)


def stream_job(
    jobs: JobQueue,
    work: Callable[[Report], Any],
    on_progress: Callable[[Progress], tuple],
    on_done: Callable[[Any], tuple],
    on_failed: Callable[[str], tuple],
    progress: Any = None,
) -> Iterator[tuple]:
    """Run `work` through the job queue, turning its events into the outputs of a page event."""
    for event in jobs.run(work):
        if isinstance(event, Progress):
            if progress is not None:
                progress(event.fraction, desc=event.message)
            yield on_progress(event)
        elif isinstance(event, Done):
            yield on_done(event.value)
        elif isinstance(event, Failed):
            yield on_failed(event.message)


def build_app(
    models: AppModels, output_dir: Path, render: RenderSettings = handlers.DEFAULT_RENDER, jobs: JobQueue | None = None
):
    """The Gradio Blocks of the app (not launched)."""
    import gradio as gr

    jobs = jobs or JobQueue()
    output_dir = Path(output_dir)
    classes = [AUTO_CLASS, *map(str, range(models.num_classes or 0))]
    device = str(models.device)
    tracker = gr.Progress()  # Gradio recognises the default and feeds it each call's progress

    def scene_outputs(outputs: SceneOutputs, status: str) -> tuple:
        video = str(outputs.video) if outputs.video is not None else None
        grid_rgb = str(outputs.grid_rgb) if outputs.grid_rgb is not None else None
        grid_depth = str(outputs.grid_depth) if outputs.grid_depth is not None else None
        files = [str(p) for p in outputs.files]
        return status, gr.skip(), grid_rgb, grid_depth, video, files, outputs

    def views_stream(work: Callable[[Report], SceneOutputs], progress: Any, done: str) -> Iterator[tuple]:
        views: list = []

        def on_progress(event: Progress) -> tuple:
            if event.image is not None:
                views.append(event.image)
                return (event.message, list(views), *[gr.skip()] * 5)
            return (event.message, *[gr.skip()] * 6)

        def on_failed(message: str) -> tuple:
            return (f"**Stopped:** {message}", *[gr.skip()] * 6)

        yield from stream_job(jobs, work, on_progress, lambda out: scene_outputs(out, done), on_failed, progress)

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        current = gr.State(None)
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    label = gr.Dropdown(classes, value=AUTO_CLASS, label="class", visible=len(classes) > 1)
                    seed = gr.Number(0, label="seed", precision=0, minimum=0)
                    viewset = gr.Dropdown(list(handlers.VIEWSETS), value="3x9", label="viewset")
                with gr.Row():
                    sampler = gr.Radio(["official", "fast"], value="official", label="sampler", elem_id="sampler")
                    steps = gr.Slider(2, 100, value=20, step=1, label="fast sampler steps")
                    guidance = gr.Slider(0.0, 10.0, value=models.guidance, step=0.1, label="guidance w")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate-button")
                    cancel_generate = gr.Button("Cancel", elem_id="generate-cancel")
                gen_status = gr.Markdown("", elem_id="generate-status")
                gen_views = gr.Gallery(label="views, as they are sampled", columns=9, height=200, elem_id="views")
                gen_grid = gr.Image(label="colour grid", type="filepath", height=GRID_HEIGHT, elem_id="grid-rgb")
                gen_depth = gr.Image(label="depth grid", type="filepath", height=GRID_HEIGHT, elem_id="grid-depth")
                gen_video = gr.Video(
                    label="swing video", height=VIDEO_HEIGHT, elem_id="scene-video", autoplay=True, loop=True
                )
            with gr.Tab("Lift", id="lift"):
                with gr.Row():
                    photo = gr.File(label="photo", file_types=["image"], elem_id="lift-photo")
                    depth = gr.File(label="depth (optional)", elem_id="lift-depth")
                    preview = gr.Image(label="photo as read", interactive=False, elem_id="lift-preview")
                with gr.Row():
                    lift_viewset = gr.Dropdown(list(handlers.VIEWSETS), value="orbit:8", label="path")
                    lift_seed = gr.Number(0, label="seed", precision=0, minimum=0)
                    lift_label = gr.Dropdown(classes, value=AUTO_CLASS, label="class", visible=len(classes) > 1)
                    lift_sampler = gr.Radio(["official", "fast"], value="official", label="sampler")
                    lift_guidance = gr.Slider(0.0, 10.0, value=models.guidance, step=0.1, label="guidance w")
                    pad = gr.Checkbox(False, label="pad to a square")
                with gr.Row():
                    lift = gr.Button("Lift", variant="primary", elem_id="lift-button")
                    cancel_lift = gr.Button("Cancel", elem_id="lift-cancel")
                lift_status = gr.Markdown("", elem_id="lift-status")
                lift_views = gr.Gallery(label="novel views", columns=8, height=200, elem_id="lift-views")
                lift_grid = gr.Image(label="colour grid", type="filepath", height=GRID_HEIGHT, elem_id="lift-grid")
                lift_depth = gr.Image(
                    label="depth grid", type="filepath", height=GRID_HEIGHT, elem_id="lift-depth-grid"
                )
                lift_video = gr.Video(
                    label="video", height=VIDEO_HEIGHT, elem_id="lift-video", autoplay=True, loop=True
                )
            with gr.Tab("Explore", id="explore"):
                gr.Markdown("The last generated or lifted scene, fused from all its views.")
                with gr.Row():
                    trajectory = gr.Radio(["swing", "orbit"], value="swing", label="camera path")
                    frames = gr.Slider(2, 120, value=render.frames, step=1, label="frames")
                    play = gr.Button("Render video", elem_id="explore-video-button")
                explore_video = gr.Video(
                    label="free-view video", height=VIDEO_HEIGHT, elem_id="explore-video", autoplay=True, loop=True
                )
                with gr.Row():
                    yaw = gr.Slider(-math.pi, math.pi, value=0.3, step=0.01, label="yaw (radians)")
                    pitch = gr.Slider(-1.2, 1.2, value=0.1, step=0.01, label="pitch (radians)")
                    view = gr.Button("Render view", elem_id="explore-frame-button")
                explore_status = gr.Markdown("", elem_id="explore-status")
                frame = gr.Image(label="fusion frame", height=VIDEO_HEIGHT, elem_id="explore-frame")
            with gr.Tab("Download", id="download"):
                gr.Markdown(
                    "The scene file (.npz + .json), mp4 videos, PLY / GLB and the NeRF folder (transforms.json)."
                )
                bundle = gr.Button("Make one zip", elem_id="bundle-button")
                bundle_status = gr.Markdown("", elem_id="bundle-status")
                bundle_file = gr.File(label="zip", elem_id="bundle")
                files = gr.File(label="files", file_count="multiple", elem_id="files")

        def on_generate(label, seed, viewset, sampler, steps, guidance, progress=tracker):
            def work(report: Report) -> SceneOutputs:
                options = GenerateOptions(int(seed or 0), parse_class(label), viewset, sampler, int(steps), guidance)
                return handlers.generate_scene(models, options, output_dir, report, render)

            yield from views_stream(work, progress, "Done: the scene, its video and exports are ready.")

        def on_photo(path):
            try:
                return handlers.check_photo(path), ""
            except (ValueError, FileNotFoundError) as error:
                return None, f"**Cannot use this photo:** {error}"

        def on_lift(photo, depth, viewset, seed, label, sampler, guidance, pad, progress=tracker):
            def work(report: Report) -> SceneOutputs:
                options = LiftOptions(viewset, int(seed or 0), parse_class(label), sampler, guidance, bool(pad))
                return handlers.lift_scene(models, photo, depth, options, output_dir, report)

            yield from views_stream(work, progress, "Done: the photo is lifted.")

        def on_explore_video(outputs, trajectory, frames, progress=tracker):
            if outputs is None:
                yield "**Generate or lift a scene first.**", gr.skip()
                return
            work = partial(
                handlers.explore_video, outputs.scene, trajectory, int(frames), ssaa=render.ssaa, device=device
            )
            yield from stream_job(
                jobs,
                work,
                lambda event: (event.message, gr.skip()),
                lambda path: ("", str(path)),
                lambda message: (f"**Stopped:** {message}", gr.skip()),
                progress,
            )

        def on_frame(outputs, yaw, pitch):
            if outputs is None:
                yield "**Generate or lift a scene first.**", gr.skip()
                return

            def work(report: Report):
                return handlers.explore_frame(outputs.scene, yaw, pitch, render.ssaa, device)

            yield from stream_job(
                jobs,
                work,
                lambda event: (event.message, gr.skip()),
                lambda image: ("", image),
                lambda message: (f"**Stopped:** {message}", gr.skip()),
            )

        def on_bundle(outputs):
            try:
                return "", str(handlers.download_bundle(outputs))
            except (ValueError, FileNotFoundError) as error:
                return f"**{error}**", None

        def on_cancel():
            return "cancelling…" if jobs.cancel() else "nothing is running"

        gen_outputs = [gen_status, gen_views, gen_grid, gen_depth, gen_video, files, current]
        lift_outputs = [lift_status, lift_views, lift_grid, lift_depth, lift_video, files, current]
        job = {"concurrency_limit": None, "show_progress": "minimal"}
        generate.click(on_generate, [label, seed, viewset, sampler, steps, guidance], gen_outputs, **job)
        cancel_generate.click(on_cancel, None, gen_status, queue=False)
        photo.change(on_photo, photo, [preview, lift_status], queue=False)
        lift_inputs = [photo, depth, lift_viewset, lift_seed, lift_label, lift_sampler, lift_guidance, pad]
        lift.click(on_lift, lift_inputs, lift_outputs, **job)
        cancel_lift.click(on_cancel, None, lift_status, queue=False)
        play.click(on_explore_video, [current, trajectory, frames], [explore_status, explore_video], **job)
        view.click(on_frame, [current, yaw, pitch], [explore_status, frame], **job)
        bundle.click(on_bundle, current, [bundle_status, bundle_file])
    return demo


def launch(demo: Any, host: str, port: int, output_dir: Path, block: bool = True) -> None:
    """Serve the page on host:port, allowing downloads from output_dir only."""
    demo.queue(default_concurrency_limit=None)
    demo.launch(
        server_name=host,
        server_port=port,
        allowed_paths=[str(Path(output_dir).resolve())],
        max_file_size=handlers.MAX_DEPTH_BYTES,
        prevent_thread_lock=not block,
        show_error=True,
        ssr_mode=False,
        quiet=not block,
    )
