from tests.e2e.session.processes import start_session

__all__ = ["start_session"]
