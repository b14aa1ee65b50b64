"""balloon testbed: boot real guest kernels, drive virtio-balloon, measure page zeroing."""

__version__ = "0.1.0"
