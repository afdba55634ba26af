"""Caffe2's protocol buffer messages (``caffe2_pb2``), built from ``caffe2.proto``."""
