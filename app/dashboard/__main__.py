from app.dashboard.server import run

run()
