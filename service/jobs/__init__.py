"""The Celery edge: the app, task names and queues, the tasks, and the dispatcher.

Nothing below `service.jobs` imports Celery or this package; domain code asks for work
through `service.dispatch`, and this layer turns those requests into messages.
"""

from service.jobs.dispatch import CeleryDispatcher, install_dispatcher

__all__ = ["CeleryDispatcher", "install_dispatcher"]
