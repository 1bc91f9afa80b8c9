"""Runs inside Slicer (registered with slicer_add_python_unittest): the library logic against the
application's own scene, subject hierarchy plugins and module logics, without running a model."""

import tempfile
import unittest
from pathlib import Path

import numpy as np
import slicer
import vtk
from MambaMIMSegmenterLib import InputError, JsonLinesParser, SegmenterLogic
from MambaMIMSegmenterLib.results import addSegmentation, buildSegmentation
from MambaMIMSegmenterLib.volumeio import readVolume, writeVolume

LABELS = [
    {
        "value": 1,
        "name": "liver",
        "color": [221, 130, 101],
        "snomed": {"code": "10200004", "meaning": "Liver"},
    },
    {"value": 2, "name": "spleen", "color": [157, 108, 162]},
]


class MambaMIMSegmenterLibTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def _obliqueVolume(self, name, array):
        matrix = vtk.vtkMatrix4x4()
        angle = np.radians(25)
        rows = [
            [-np.cos(angle) * 2.0, np.sin(angle) * 2.5, 0, 12.0],
            [-np.sin(angle) * 2.0, -np.cos(angle) * 2.5, 0, -7.5],
            [0, 0, 3.0, 40.0],
        ]
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                matrix.SetElement(i, j, value)
        return slicer.util.addVolumeFromArray(array, ijkToRAS=matrix, name=name)

    def test_label_map_round_trip_keeps_geometry_names_and_study(self):
        i = np.mgrid[:12, :14, :16][2]
        volume = self._obliqueVolume("scan", np.where(i > 7, 60, -900).astype(np.int16))
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "patient"), "study")
        sh.SetItemParent(sh.GetItemByDataNode(volume), study)

        labels = np.zeros((12, 14, 16), np.uint8)
        labels[2:6, 3:9, 4:10] = 1
        labels[7:10, 2:5, 10:14] = 2
        labelNode = self._obliqueVolume("labels", labels)
        with tempfile.TemporaryDirectory() as folder:
            path = writeVolume(labelNode, Path(folder) / "labels.nrrd")
            slicer.mrmlScene.RemoveNode(labelNode)
            before = slicer.mrmlScene.GetNumberOfNodes()
            segmentation = buildSegmentation(readVolume(path, labelmap=True), LABELS, volume)
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before, "built outside the scene")
            segmentation = addSegmentation(segmentation, volume, slicer.mrmlScene)

        self.assertEqual(segmentation.GetName(), "scan segmentation")
        self.assertEqual(sh.GetItemParent(sh.GetItemByDataNode(segmentation)), study)
        for segmentId, label in (("liver", LABELS[0]), ("spleen", LABELS[1])):
            segment = segmentation.GetSegmentation().GetSegment(segmentId)
            self.assertEqual(segment.GetName(), label["name"])
            array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
            np.testing.assert_array_equal(array, (labels == label["value"]).astype(array.dtype))
        self.assertIn("10200004", segmentation.GetSegmentation().GetSegment("liver").GetTerminology())

    def test_bad_inputs_are_refused(self):
        logic = SegmenterLogic()
        with self.assertRaises(InputError):
            logic.segment(None, logic.registry.entries("segmentation")[0], "cpu")
        labelNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "lab")
        with self.assertRaisesRegex(InputError, "label map"):
            logic.segment(labelNode, logic.registry.entries("segmentation")[0], "cpu")

    def test_progress_parser_in_slicer_python(self):
        parser = JsonLinesParser()
        items = parser.feed(b'{"stage": "inference", "fraction": 0.5}\nnoise\n{"stage": "do')
        self.assertEqual(items[0].stage, "inference")
        self.assertEqual(items[1], "noise")
        self.assertEqual(parser.feed(b'ne", "fraction": 1}\n')[0].stage, "done")
