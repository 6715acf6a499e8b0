"""The local dashboard (issue 13 §2): a small Studio for the local stack.

`tokenmeter stack start` runs it as its own process on 127.0.0.1:<studio port> (54323 with the
default ports, the Supabase CLI's Studio port; `TOKENMETER_STUDIO_PORT` moves it) when
`[studio] enabled = true` in supabase/config.toml.

    server.py   Starlette app: sign-in with the service_role key, the pages, the SQL editor
    data.py     the pages' queries: each bounded by an index, a LIMIT or a time range
    editor.py   the SQL editor: runs a script as `postgres` in one transaction, row cap, timeout
    charts.py   spend per day stacked by model, drawn by matplotlib as inline SVG
    process.py  start / find / stop the process (used by app.stack.manager)

Pages are rendered on the server with Jinja2; the only JavaScript is a few lines for the
editor's keyboard shortcut and error caret, shipped in the package (no build step, nothing
fetched at run time).
"""
