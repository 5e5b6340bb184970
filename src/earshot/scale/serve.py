"""`earshot serve --shards URI`: the search API over shards held by Ray actors.

What a catalogue-less server can answer: `GET /api/search?q=TEXT&k=N` (the same response shape
as the catalogue server's: `{"query", "hits": [Hit.as_dict()...]}`), `GET /api/health` and
`GET /api/stats` (shards, windows, actors and their memory). It sits behind the same guard as
`earshot serve` (Host check on loopback, optional bearer token, security headers). The web
page, playback and the file routes need a catalogue: `earshot merge-shards` makes one.
"""

from __future__ import annotations

import threading

from earshot.errors import SearchError


def create_shard_app(searcher, settings):
    from fastapi import FastAPI, Query
    from fastapi.responses import JSONResponse

    from earshot.serve.guard import Guard

    app = FastAPI(title="earshot (shards)", docs_url="/docs", redoc_url=None)
    lock = threading.Lock()  # one query at a time through the model's text encoder

    @app.get("/api/health")
    def health():
        return {"ok": True, "shards": len(searcher.manifest.shards), "windows": searcher.total}

    @app.get("/api/stats")
    def stats():
        return {
            "shards_uri": searcher.loc.uri,
            "model_id": searcher.manifest.model_id,
            "shards": len(searcher.manifest.shards),
            "windows": searcher.total,
            "actors": searcher.stats(),
        }

    @app.get("/api/search")
    def search(q: str = Query(..., max_length=1000), k: int = Query(10, ge=1, le=200)):
        try:
            with lock:
                hits = searcher.search_text(q, k)
        except SearchError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return {"query": q, "hits": [h.as_dict() for h in hits]}

    app.add_middleware(Guard, settings=settings)
    app.state.searcher = searcher
    return app
