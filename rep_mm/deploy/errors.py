"""The two exceptions of :func:`rep_mm.deploy.export`: bad input vs a failed export."""

__all__ = ['DeployError', 'ExportFailed']


class DeployError(ValueError):
    """Bad input (missing file, unknown task, work dir that would overwrite something)."""


class ExportFailed(RuntimeError):
    """mmdeploy / torch.onnx could not export the model (the message says why)."""
