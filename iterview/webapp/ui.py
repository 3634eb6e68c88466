"""The page: Generate, Lift, Explore and Download tabs over the handlers, built with Gradio (imported only here,
so the rest of iterview works without the `app` extra)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
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
JOB_EVENT = {"concurrency_limit": None, "show_progress": "minimal"}  # jobs queue in JobQueue, not in Gradio


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


@dataclass
class Page:
    """What every event of the page works with: the models, the output folder, the render settings, the job
    queue and Gradio's progress tracker (a handler's `progress` default, which Gradio feeds each call's
    progress)."""

    models: AppModels
    output_dir: Path
    render: RenderSettings
    jobs: JobQueue
    tracker: Any

    @property
    def device(self) -> str:
        """The models' device, as the renderers take it."""
        return str(self.models.device)

    def views_stream(self, work: Callable[[Report], SceneOutputs], progress: Any, done: str) -> Iterator[tuple]:
        """Run a generate or lift job: status and the views so far as they come, then the scene's outputs."""
        import gradio as gr

        views: list = []

        def on_progress(event: Progress) -> tuple:
            if event.image is not None:
                views.append(event.image)
                return (event.message, list(views), *[gr.skip()] * 5)
            return (event.message, *[gr.skip()] * 6)

        def on_failed(message: str) -> tuple:
            return (f"**Stopped:** {message}", *[gr.skip()] * 6)

        yield from stream_job(self.jobs, work, on_progress, lambda out: scene_outputs(out, done), on_failed, progress)


def scene_outputs(outputs: SceneOutputs, status: str) -> tuple:
    """A finished scene as the outputs of a generate or lift event (the gallery of views is left as it is)."""
    import gradio as gr

    video = str(outputs.video) if outputs.video is not None else None
    grid_rgb = str(outputs.grid_rgb) if outputs.grid_rgb is not None else None
    grid_depth = str(outputs.grid_depth) if outputs.grid_depth is not None else None
    files = [str(p) for p in outputs.files]
    return status, gr.skip(), grid_rgb, grid_depth, video, files, outputs


def build_app(
    models: AppModels, output_dir: Path, render: RenderSettings = handlers.DEFAULT_RENDER, jobs: JobQueue | None = None
):
    """The Gradio Blocks of the app (not launched)."""
    import gradio as gr

    page = Page(models, Path(output_dir), render, jobs or JobQueue(), gr.Progress())
    classes = [AUTO_CLASS, *map(str, range(models.num_classes or 0))]
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        current = gr.State(None)
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        with gr.Tabs():
            generate = _generate_tab(classes, models.guidance)
            lift = _lift_tab(classes, models.guidance)
            explore = _explore_tab(render.frames)
            download = _download_tab()
        _wire_scene_events(page, current, generate, lift, download.files)
        _wire_explore_events(page, current, explore, download)
    return demo


def _generate_tab(classes: list[str], guidance: float) -> SimpleNamespace:
    """The Generate tab's components: settings, buttons, status, the views as they come, grids and video."""
    import gradio as gr

    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            label = gr.Dropdown(classes, value=AUTO_CLASS, label="class", visible=len(classes) > 1)
            seed = gr.Number(0, label="seed", precision=0, minimum=0)
            viewset = gr.Dropdown(list(handlers.VIEWSETS), value="3x9", label="viewset")
        with gr.Row():
            sampler = gr.Radio(["official", "fast"], value="official", label="sampler", elem_id="sampler")
            steps = gr.Slider(2, 50, value=10, step=1, label="fast sampler steps per view")
            guidance_slider = gr.Slider(0.0, 10.0, value=guidance, step=0.1, label="guidance w")
        with gr.Row():
            button = gr.Button("Generate", variant="primary", elem_id="generate-button")
            cancel = gr.Button("Cancel", elem_id="generate-cancel")
        status = gr.Markdown("", elem_id="generate-status")
        views = gr.Gallery(label="views, as they are sampled", columns=9, height=200, elem_id="views")
        grid = gr.Image(label="colour grid", type="filepath", height=GRID_HEIGHT, elem_id="grid-rgb")
        depth = gr.Image(label="depth grid", type="filepath", height=GRID_HEIGHT, elem_id="grid-depth")
        video = gr.Video(label="swing video", height=VIDEO_HEIGHT, elem_id="scene-video", autoplay=True, loop=True)
    inputs = [label, seed, viewset, sampler, steps, guidance_slider]
    return SimpleNamespace(
        inputs=inputs, button=button, cancel=cancel, status=status, results=[views, grid, depth, video]
    )


def _lift_tab(classes: list[str], guidance: float) -> SimpleNamespace:
    """The Lift tab's components: the photo and optional depth uploads, a preview, settings, buttons, status,
    the novel views, grids and video."""
    import gradio as gr

    with gr.Tab("Lift", id="lift"):
        with gr.Row():
            photo = gr.File(label="photo", file_types=["image"], elem_id="lift-photo")
            depth_file = gr.File(label="depth (optional)", elem_id="lift-depth")
            preview = gr.Image(label="photo as read", interactive=False, elem_id="lift-preview")
        with gr.Row():
            viewset = gr.Dropdown(list(handlers.VIEWSETS), value="orbit:8", label="path")
            seed = gr.Number(0, label="seed", precision=0, minimum=0)
            label = gr.Dropdown(classes, value=AUTO_CLASS, label="class", visible=len(classes) > 1)
            sampler = gr.Radio(["official", "fast"], value="official", label="sampler")
            guidance_slider = gr.Slider(0.0, 10.0, value=guidance, step=0.1, label="guidance w")
            pad = gr.Checkbox(False, label="pad to a square")
        with gr.Row():
            button = gr.Button("Lift", variant="primary", elem_id="lift-button")
            cancel = gr.Button("Cancel", elem_id="lift-cancel")
        status = gr.Markdown("", elem_id="lift-status")
        views = gr.Gallery(label="novel views", columns=8, height=200, elem_id="lift-views")
        grid = gr.Image(label="colour grid", type="filepath", height=GRID_HEIGHT, elem_id="lift-grid")
        depth = gr.Image(label="depth grid", type="filepath", height=GRID_HEIGHT, elem_id="lift-depth-grid")
        video = gr.Video(label="video", height=VIDEO_HEIGHT, elem_id="lift-video", autoplay=True, loop=True)
    inputs = [photo, depth_file, viewset, seed, label, sampler, guidance_slider, pad]
    return SimpleNamespace(
        photo=photo,
        preview=preview,
        inputs=inputs,
        button=button,
        cancel=cancel,
        status=status,
        results=[views, grid, depth, video],
    )


def _explore_tab(frames: int) -> SimpleNamespace:
    """The Explore tab's components: a free-view video along a camera path, and one frame from a chosen camera."""
    import gradio as gr

    with gr.Tab("Explore", id="explore"):
        gr.Markdown("The last generated or lifted scene, fused from all its views.")
        with gr.Row():
            trajectory = gr.Radio(["swing", "orbit"], value="swing", label="camera path")
            frame_count = gr.Slider(2, 120, value=frames, step=1, label="frames")
            play = gr.Button("Render video", elem_id="explore-video-button")
        video = gr.Video(
            label="free-view video", height=VIDEO_HEIGHT, elem_id="explore-video", autoplay=True, loop=True
        )
        with gr.Row():
            yaw = gr.Slider(-math.pi, math.pi, value=0.3, step=0.01, label="yaw (radians)")
            pitch = gr.Slider(-1.2, 1.2, value=0.1, step=0.01, label="pitch (radians)")
            view = gr.Button("Render view", elem_id="explore-frame-button")
        status = gr.Markdown("", elem_id="explore-status")
        frame = gr.Image(label="fusion frame", height=VIDEO_HEIGHT, elem_id="explore-frame")
    return SimpleNamespace(
        trajectory=trajectory,
        frames=frame_count,
        play=play,
        video=video,
        yaw=yaw,
        pitch=pitch,
        view=view,
        status=status,
        frame=frame,
    )


def _download_tab() -> SimpleNamespace:
    """The Download tab's components: the zip button, its status and file, and the scene's files."""
    import gradio as gr

    with gr.Tab("Download", id="download"):
        gr.Markdown("The scene file (.npz + .json), mp4 videos, PLY / GLB and the NeRF folder (transforms.json).")
        bundle = gr.Button("Make one zip", elem_id="bundle-button")
        status = gr.Markdown("", elem_id="bundle-status")
        bundle_file = gr.File(label="zip", elem_id="bundle")
        files = gr.File(label="files", file_count="multiple", elem_id="files")
    return SimpleNamespace(bundle=bundle, status=status, bundle_file=bundle_file, files=files)


def _wire_scene_events(page: Page, current: Any, generate: SimpleNamespace, lift: SimpleNamespace, files: Any) -> None:
    """Generate, Lift (and checking an uploaded photo) and their Cancel buttons; a finished scene becomes `current`."""
    models, output_dir = page.models, page.output_dir

    def on_generate(label, seed, viewset, sampler, steps, guidance, progress=page.tracker):
        def work(report: Report) -> SceneOutputs:
            options = GenerateOptions(int(seed or 0), parse_class(label), viewset, sampler, int(steps), guidance)
            return handlers.generate_scene(models, options, output_dir, report, page.render)

        yield from page.views_stream(work, progress, "Done: the scene, its video and exports are ready.")

    def on_photo(path):
        try:
            return handlers.check_photo(path), ""
        except (ValueError, FileNotFoundError) as error:
            return None, f"**Cannot use this photo:** {error}"

    def on_lift(photo, depth, viewset, seed, label, sampler, guidance, pad, progress=page.tracker):
        def work(report: Report) -> SceneOutputs:
            options = LiftOptions(viewset, int(seed or 0), parse_class(label), sampler, guidance, bool(pad))
            return handlers.lift_scene(models, photo, depth, options, output_dir, report)

        yield from page.views_stream(work, progress, "Done: the photo is lifted.")

    def on_cancel():
        return "cancelling…" if page.jobs.cancel() else "nothing is running"

    generate_outputs = [generate.status, *generate.results, files, current]
    generate.button.click(on_generate, generate.inputs, generate_outputs, **JOB_EVENT)
    generate.cancel.click(on_cancel, None, generate.status, queue=False)
    lift.photo.change(on_photo, lift.photo, [lift.preview, lift.status], queue=False)
    lift.button.click(on_lift, lift.inputs, [lift.status, *lift.results, files, current], **JOB_EVENT)
    lift.cancel.click(on_cancel, None, lift.status, queue=False)


def _wire_explore_events(page: Page, current: Any, explore: SimpleNamespace, download: SimpleNamespace) -> None:
    """Rendering the current scene (a video along a path, one frame from a camera) and zipping it for download."""
    import gradio as gr

    render, device = page.render, page.device

    def on_explore_video(outputs, trajectory, frames, progress=page.tracker):
        if outputs is None:
            yield "**Generate or lift a scene first.**", gr.skip()
            return
        work = partial(handlers.explore_video, outputs.scene, trajectory, int(frames), ssaa=render.ssaa, device=device)
        yield from stream_job(
            page.jobs,
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
            page.jobs,
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

    explore.play.click(
        on_explore_video, [current, explore.trajectory, explore.frames], [explore.status, explore.video], **JOB_EVENT
    )
    explore.view.click(on_frame, [current, explore.yaw, explore.pitch], [explore.status, explore.frame], **JOB_EVENT)
    download.bundle.click(on_bundle, current, [download.status, download.bundle_file])


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
