"""The control plane shared by api/ and worker/: settings, database models, the job lifecycle,
artifact storage and the queue facade."""

if __name__ != "ganforge.jobs":  # namespace guard: one name per module, never two copies
    raise ImportError(f"import ganforge.jobs, not {__name__}: jobs/ is installed as part of the ganforge package")
