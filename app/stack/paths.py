"""Where the local stack keeps its state, and which ports it uses.

Everything the stack writes (data directory, logs, keys, pid files) lives under one git-ignored
folder, `.tokenmeter/` in the project root. Ports default to the Supabase CLI's (API 54321,
database 54322, Studio 54323, the mail catcher 54324); `TOKENMETER_API_PORT`, `TOKENMETER_DB_PORT`
and `TOKENMETER_STATE_DIR` override them so that two stacks (say, a developer's and a test run's)
can live side by side. The dashboard and mail-catcher ports follow the API port (+2, +3, the
Supabase CLI's layout) unless `TOKENMETER_STUDIO_PORT` / `TOKENMETER_INBUCKET_PORT` say otherwise,
so a stack moved by one variable moves whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_API_PORT = 54321
DEFAULT_DB_PORT = 54322


def project_root() -> Path:
    """The nearest folder at or above the working directory holding `supabase/config.toml`."""
    start = Path(os.environ.get("TOKENMETER_PROJECT_DIR", os.getcwd())).resolve()
    for folder in (start, *start.parents):
        if (folder / "supabase" / "config.toml").is_file():
            return folder
    return start


@dataclass(frozen=True)
class StackPaths:
    root: Path
    state: Path
    api_port: int
    db_port: int
    studio_port: int = 0  # 0: api_port + 2
    inbucket_port: int = 0  # 0: api_port + 3

    def __post_init__(self) -> None:
        if not self.studio_port:
            object.__setattr__(self, "studio_port", self.api_port + 2)
        if not self.inbucket_port:
            object.__setattr__(self, "inbucket_port", self.api_port + 3)

    @classmethod
    def from_env(cls) -> StackPaths:
        root = project_root()
        state = Path(os.environ.get("TOKENMETER_STATE_DIR", root / ".tokenmeter")).resolve()
        return cls(
            root=root,
            state=state,
            api_port=int(os.environ.get("TOKENMETER_API_PORT", DEFAULT_API_PORT)),
            db_port=int(os.environ.get("TOKENMETER_DB_PORT", DEFAULT_DB_PORT)),
            studio_port=int(os.environ.get("TOKENMETER_STUDIO_PORT", 0)),
            inbucket_port=int(os.environ.get("TOKENMETER_INBUCKET_PORT", 0)),
        )

    @property
    def pgdata(self) -> Path:
        return self.state / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.state / "run"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def postgres_log(self) -> Path:
        return self.logs / "postgres.log"

    @property
    def gateway_log(self) -> Path:
        return self.logs / "gateway.log"

    @property
    def gateway_pid(self) -> Path:
        return self.state / "gateway.pid"

    @property
    def keys_file(self) -> Path:
        return self.state / "keys.json"

    @property
    def env_file(self) -> Path:
        """Generated env file (SUPABASE_URL, keys, DB URL) that the app loads with python-dotenv."""
        return self.state / "stack.env"

    @property
    def migrations_dir(self) -> Path:
        return self.root / "supabase" / "migrations"

    @property
    def functions_dir(self) -> Path:
        return self.root / "supabase" / "functions"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def db_url(self, user: str = "postgres", password: str = "postgres") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.db_port}/postgres"
