"""TaskFlow decorators: ``@task.cometflux`` (registered through the provider info's ``task-decorators``)."""
