"""The controller framework under the three reconcilers, in one package:

* client.py     the async Kubernetes API client and its verbs (get, list, create, apply, patch,
                patch_status, delete, watch streams, discovery), every request counted;
* informers.py  list + watch of our kinds and their children (why not kopf's: its docstring);
* store.py      the cache the informers fill, children by owner and a reverse index of references;
* queue.py      the work queue that runs reconciles (deduplicated, one at a time per key, retries);
* errors.py     what a reconcile raises to tell the queue: Retry(delay), InvalidSpec;
* events.py     Kubernetes Events about our objects.

kopf runs the process around it (login, start-up, clean-up, the liveness endpoint and its probes,
signals: main.py); leader election, when it comes, lives here too. Nothing here knows our kinds.
"""
