# The simulator fixtures, exactly as users load them in their own test suites.
pytest_plugins = ["airflow_provider_cometflux.testing.pytest_plugin"]
