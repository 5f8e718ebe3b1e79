"""The ``zexec`` command: ``up`` / ``down`` / ``status`` / ``logs`` for the whole stack on
this machine, and one subcommand per component (broker, server, deploy-api, ep-api,
devidp). Entry point: :func:`zexec.apps.cli.main.main`."""
