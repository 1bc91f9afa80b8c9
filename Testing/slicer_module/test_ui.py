"""The module's .ui loads with PySide6 offscreen and matches what the module code expects."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UI_FILE = ROOT / "MambaMIMSegmenter" / "Resources" / "UI" / "MambaMIMSegmenter.ui"
MODULE_FILE = ROOT / "MambaMIMSegmenter" / "MambaMIMSegmenter.py"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtWidgets = pytest.importorskip("PySide6.QtWidgets")
QtUiTools = pytest.importorskip("PySide6.QtUiTools")


@pytest.fixture(scope="module")
def ui_widget():
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    # Slicer's own widgets (qMRML*, ctk*) are unknown here; QUiLoader builds their declared base class,
    # which keeps every object name and dynamic property.
    widget = QtUiTools.QUiLoader().load(str(UI_FILE))
    assert widget is not None, f"QUiLoader could not load {UI_FILE}"
    yield widget
    widget.deleteLater()
    app.processEvents()


def _widgets_by_name(widget) -> dict:
    return {
        child.objectName(): child for child in widget.findChildren(QtWidgets.QWidget) if child.objectName()
    }


def test_every_widget_the_module_uses_exists(ui_widget):
    referenced = set(re.findall(r"self\.ui\.([A-Za-z_]\w*)", MODULE_FILE.read_text()))
    assert len(referenced) >= 10  # the parse found the module's widget uses
    missing = sorted(referenced - set(_widgets_by_name(ui_widget)))
    assert not missing, f"widgets used by MambaMIMSegmenter.py but absent from the .ui: {missing}"


def _parameter_fields() -> dict[str, str]:
    tree = ast.parse(MODULE_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list
        ):
            return {
                item.target.id: ast.unparse(item.annotation)
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    raise AssertionError("no @parameterNodeWrapper class in the module")


def test_parameter_bindings_match_the_parameter_node(ui_widget):
    fields = _parameter_fields()
    bound = {}
    for name, child in _widgets_by_name(ui_widget).items():
        parameter = child.property("SlicerParameterName")
        if parameter:
            bound[parameter] = name
    unknown = sorted(set(bound) - set(fields))
    assert not unknown, f".ui binds parameters the parameter node does not declare: {unknown}"
    # Every parameter is edited through a bound widget: no hand-written GUI/parameter sync.
    assert set(bound) == set(fields), f"parameters without a widget: {sorted(set(fields) - set(bound))}"


def test_widget_kinds_fit_their_parameters(ui_widget):
    widgets = _widgets_by_name(ui_widget)
    assert widgets["fastCheckBox"].metaObject().className() == "QCheckBox"
    assert widgets["seedSpinBox"].maximum() >= 999999
    assert widgets["deviceComboBox"].metaObject().className() == "QComboBox"
    # Mask-ratio range 25-90 % as the issue asks, matching the parameter's WithinRange.
    fields = _parameter_fields()
    assert "WithinRange(0.25, 0.9)" in fields["maskRatio"]
    assert widgets["applyButton"].text() == "Segment"


def test_module_cites_both_papers():
    text = MODULE_FILE.read_text()
    assert "2408.08070" in text and "2410.15496" in text
    assert 'categories = ["Segmentation"]' in text


def test_no_path_parameter_that_would_show_a_dot():
    """A ``Path`` parameter bound to a ctkPathLineEdit is written as ``str(Path())`` == "." (Slicer
    5.10's parameterNodeWrapper/guiConnectors.py): the checkpoint file field is read directly."""
    fields = _parameter_fields()
    assert not any(annotation in ("Path", "pathlib.Path") for annotation in fields.values()), fields


def test_cuda_kernels_and_layout_restore_are_offered(ui_widget):
    widgets = _widgets_by_name(ui_widget)
    assert widgets["installCudaKernelsButton"].text().startswith("Install optional CUDA kernels")
    assert widgets["settingsCollapsibleButton"].property("text") == "Advanced"
    assert not widgets["restoreLayoutButton"].isEnabled()
    assert widgets["compatibilityLabel"].isHidden()
