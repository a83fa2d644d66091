"""Publishing: scheduling a post, dispatching due posts, publishing one, sweeping the stuck.

The Celery tasks in :mod:`herald.tasks.publishing` and the HTTP API call these functions; the
flow is DESIGN.md §3.
"""
