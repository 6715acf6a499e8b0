from app.stack.gateway.server import run

run()
