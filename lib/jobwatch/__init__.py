"""ci-jobwatch: watch Tencent Cloud Infinite batch data processing jobs and report every change of state."""

__version__ = "0.1.0"
