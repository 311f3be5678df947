"""gan_core: a pure PyTorch GAN library — spec, models, losses, data, trainer, checkpoints,
sampling and evaluation. Importing it does no work and pulls in no service library."""

__all__ = ["JobSpec"]


def __getattr__(name: str):
    # Lazy: `import gan_core` stays cheap; torch is imported by the modules that need it.
    if name == "JobSpec":
        from gan_core.spec import JobSpec

        return JobSpec
    raise AttributeError(name)
