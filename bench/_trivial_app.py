"""The console app plus one trivial route, for bench/checks.py's /readyz comparison."""
from console import create_app

app = create_app()


@app.get("/bench/trivial")
def trivial():
    return {"status": "ok"}
