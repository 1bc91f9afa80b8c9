"""The page: a drawer with load / display / Segment / reconstruction panels, the views beside it.

Layout only; every action calls a :class:`SegmenterWebApp` method. Element ``id``s name what the browser
tests look for.
"""

from __future__ import annotations

from trame.ui.vuetify3 import SinglePageWithDrawerLayout
from trame.widgets import client, html
from trame.widgets import vuetify3 as v

# Uploads go over HTTP (streamed to disk, any size), not the websocket; the server then loads them.
_UPLOAD_SCRIPT = """
window.mambamimUpload = async function (files) {
  if (!files || !files.length) return;
  const file = files[0];
  const response = await fetch('upload?name=' + encodeURIComponent(file.name),
    {method: 'POST', body: file, credentials: 'same-origin'});
  if (!response.ok) { alert(await response.text()); }
};
"""


def build_ui(app):
    with SinglePageWithDrawerLayout(app.server, theme="dark") as layout:
        layout.title.set_text("MambaMIM Segmenter")
        client.Script(_UPLOAD_SCRIPT)
        client.Style(
            "html { overflow-y: hidden; } .mm-swatch { width: 14px; height: 14px; border-radius: 3px;"
            " display: inline-block; margin-right: 6px; }"
        )
        with layout.toolbar:
            v.VSpacer()
            html.Span("{{ volume_name }}", classes="mx-4 text-subtitle-1", id="volume-name")
            with v.VBtnToggle(v_model=("view_layout",), mandatory=True, density="compact", classes="mr-2"):
                v.VBtn("Segment views", value="Segment")
                v.VBtn("Reconstruction", value="Reconstruction", disabled=("!has_reconstruction",))
        with layout.drawer as drawer:
            drawer.width = 380
            _load_panel(app)
            v.VDivider()
            _segment_panel(app)
            v.VDivider()
            _reconstruction_panel(app)
        with layout.content:
            with html.Div(style="position: relative; height: calc(100vh - 64px); width: 100%;"):
                app.layout_manager.initialize_layout_grid(layout)
        with layout.footer:
            html.Span(
                "{{ message }}",
                classes=("message_is_error ? 'text-error' : ''",),
                id="message",
            )
    return layout


def _load_panel(app) -> None:
    with v.VCard(flat=True, classes="pa-2"):
        v.VCardTitle("Scan", classes="text-subtitle-1")
        with v.VCardText():
            v.VFileInput(
                label="Upload (NIfTI, NRRD, MHA, MGH, zipped DICOM)",
                density="compact",
                accept=".nii,.gz,.nrrd,.nhdr,.mha,.mhd,.mgh,.mgz,.zip",
                disabled=("running",),
                change="window.mambamimUpload($event.target.files)",
                id="upload",
            )
            with html.Div(v_if=("server_scans.length",)):
                v.VSelect(label="Server folder", items=("server_scans",), v_model=("server_scan",),
                          density="compact")
                v.VBtn(
                    "Open", click=app.load_server_scan, disabled=("running || !server_scan",), size="small"
                )
            v.VBtn(
                "Open the sample CT",
                v_if=("has_sample",),
                click=app.load_sample,
                disabled=("running",),
                size="small",
                classes="mt-2",
                id="load-sample",
            )
            v.VSelect(
                label="Window / level",
                items=("wl_presets",),
                v_model=("wl_preset",),
                density="compact",
                classes="mt-3",
                disabled=("!volume_name",),
            )


def _segment_panel(app) -> None:
    with v.VCard(flat=True, classes="pa-2"):
        v.VCardTitle("Segment", classes="text-subtitle-1")
        with v.VCardText():
            v.VSelect(label="Model", items=("models",), v_model=("model_id",), density="compact",
                      disabled=("running",))
            with html.Div(classes="d-flex"):
                v.VSelect(label="Device", items=("devices",), v_model=("device",), density="compact",
                          disabled=("running",), classes="mr-2")
                v.VCheckbox(label="Fast", v_model=("fast",), density="compact", disabled=("running",))
            v.VSlider(label="Overlap", v_model=("overlap",), min=0, max=0.9, step=0.05, thumb_label=True,
                      density="compact", disabled=("running",))
            v.VBtn(
                "Segment",
                v_if=("running !== 'segment'",),
                click=app.start_segment,
                disabled=("!volume_name || !!running",),
                color="primary",
                block=True,
                id="segment",
            )
            v.VBtn(
                "Cancel",
                v_if=("running === 'segment'",),
                click=app.cancel,
                color="error",
                block=True,
                id="cancel",
            )
            _progress("segment")
            with html.Div(v_if=("segments.length",), classes="mt-3", id="segment-list"):
                v.VSlider(label="Opacity", v_model=("segment_opacity",), min=0, max=1, step=0.05,
                          density="compact")
                v.VBtn(
                    text=("show_surfaces ? 'Hide 3-D surfaces' : 'Show 3-D surfaces'",),
                    click=app.toggle_surfaces,
                    size="small",
                    prepend_icon="mdi-cube-outline",
                    id="surfaces",
                )
                with html.Table(style="width: 100%; font-size: 0.85em;"):
                    with html.Tr(v_for="row in segments", key="row.id", classes="mm-segment"):
                        with html.Td():
                            v.VCheckboxBtn(
                                model_value=("row.visible",),
                                density="compact",
                                update_modelValue=(app.set_segment_visible, "[row.id, $event]"),
                            )
                        with html.Td():
                            html.Span(classes="mm-swatch", style=("{ background: row.color }",))
                            html.Span("{{ row.name }}")
                        html.Td("{{ row.volume_ml }} mL", style="text-align: right;")
            with html.Div(v_if=("segments.length",), classes="mt-2"):
                v.VBtn("Label map", href="download/labels", target="_blank", size="small", classes="mr-2",
                       prepend_icon="mdi-download", id="download-labels")
                v.VBtn(".seg.nrrd", href="download/seg.nrrd", target="_blank", size="small", classes="mr-2",
                       prepend_icon="mdi-download", id="download-seg")
                v.VBtn("DICOM SEG", href=("dicom_seg_reason ? undefined : 'download/dicom-seg'",),
                       target="_blank", size="small", prepend_icon="mdi-download",
                       disabled=("!!dicom_seg_reason",), id="download-dicom-seg")
                html.Div("{{ dicom_seg_reason }}", v_if=("dicom_seg_reason",), classes="text-caption mt-1",
                         id="dicom-seg-reason")


def _reconstruction_panel(app) -> None:
    with v.VCard(flat=True, classes="pa-2"):
        v.VCardTitle("Masked-input reconstruction", classes="text-subtitle-1")
        with v.VCardText():
            v.VSelect(label="Checkpoint", items=("checkpoints",), v_model=("checkpoint_id",),
                      density="compact", disabled=("running",))
            v.VSlider(label="Mask ratio", v_model=("mask_ratio",), min=0.25, max=0.9, step=0.05,
                      thumb_label=True, density="compact", disabled=("running",))
            v.VTextField(label="Seed", v_model=("seed",), type="number", density="compact",
                         disabled=("running",))
            v.VBtn(
                "Reconstruct",
                v_if=("running !== 'reconstruct'",),
                click=app.start_reconstruct,
                disabled=("!volume_name || !!running",),
                block=True,
                id="reconstruct",
            )
            v.VBtn("Cancel", v_if=("running === 'reconstruct'",), click=app.cancel, color="error", block=True)
            _progress("reconstruct")
            with v.VExpansionPanels(classes="mt-2"):
                with v.VExpansionPanel(title="Log"):
                    with v.VExpansionPanelText():
                        html.Pre("{{ log }}", style="font-size: 0.75em; max-height: 240px; overflow: auto;",
                                 id="log")


def _progress(kind: str) -> None:
    with html.Div(v_if=(f"running === '{kind}'",), classes="mt-2", id="progress"):
        v.VProgressLinear(model_value=("progress",), height=8, color="primary")
        html.Div("{{ progress_text }}", classes="text-caption")
