"""Caffe2's ``caffe2.python`` modules, on scopeops: ``core``, ``workspace``, ``scope``..."""
