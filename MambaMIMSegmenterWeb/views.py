"""Streamed Slicer views that render only when the stream asks.

trame-slicer's ``register_rca_factories`` builds each view with the default ``DirectRendering``
strategy and hands it to the stream's scheduler only at the end of the view's construction; in
between, every displayable-manager update renders synchronously. On a CPU renderer (Mesa llvmpipe)
that was about 450 renders for the app's seven views, most of its start-up time (58 of 73 s on a
shared 2-core machine). Here the views start with ``NoScheduleRendering``, so their first frame is
the one the stream asks for; the factories and their options are otherwise trame-slicer's.
"""

from __future__ import annotations

from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui, create_vertical_view_gutter_ui
from trame_slicer.core import ViewManager
from trame_slicer.rca_view.rca_view_factory import RemoteViewFactory
from trame_slicer.views import NoScheduleRendering, SliceView, ThreeDView, ViewType


def register_view_factories(view_manager: ViewManager, server, rca_encoder: str) -> None:
    for view_class, view_type, gutter in (
        (SliceView, ViewType.SLICE_VIEW, create_vertical_slice_view_gutter_ui),
        (ThreeDView, ViewType.THREE_D_VIEW, create_vertical_view_gutter_ui),
    ):
        view_manager.register_factory(
            RemoteViewFactory(
                server,
                _quiet(view_class),
                view_type,
                populate_view_ui_f=gutter,
                rca_encoder=rca_encoder,
                target_fps=30.0,
                blur_fps=10.0,
            )
        )


def _quiet(view_class):
    """The view's constructor, with a strategy of its own that does not render."""

    def create(**kwargs):
        return view_class(scheduled_render_strategy=NoScheduleRendering(), **kwargs)

    return create
