"""schedlog.actors: the pykka runtime (timer, executors, log watcher, node identity)."""
