"""The control plane shared by api/ and worker/: settings, database models, the job lifecycle,
artifact storage and the queue facade."""
