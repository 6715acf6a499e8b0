"""Plans of the metered endpoint (seed 002) and their weighted routes: `Plans` lists and shows
them and sets a route (plan → model at an upstream with a relative weight). Reads and writes
public.plans / plan_routes / upstreams, which service_role may write (20251130000007); the
router itself is SQL (private.pick_route)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.client import call
from app.errors import InvalidInput, NotFound
from app.facade import ServiceFacade
from app.models import Plan, PlanRoute

MAX_WEIGHT = 1_000_000


class Plans(ServiceFacade):
    """Methods take keyword arguments and raise `app.errors` types: InvalidInput (nothing
    written), NotFound (plan_not_found, upstream_not_found), PermissionDenied, Unavailable."""

    def list(self) -> list[Plan]:
        """Every plan (inactive ones too), by name, with its routes."""
        plans = call(lambda: self.client.table("plans").select("*").order("name").execute()).data
        return self._with_routes(plans)

    def get(self, *, name: str) -> Plan:
        """The plan NAME with its routes; raises NotFound (plan_not_found)."""
        return self._with_routes([self._plan_row(name)])[0]

    def set_route(self, *, plan: str, model: str, upstream: str, weight: int) -> PlanRoute:
        """Route MODEL of PLAN to UPSTREAM with a relative weight (create, or change the weight
        of the existing route). Weights are normalised at run time; 0 parks the route."""
        if not model.strip() or len(model) > 255:
            raise InvalidInput(
                "invalid_argument",
                code="invalid_argument",
                field="model",
                detail="model must be a non-empty name of at most 255 characters",
            )
        if not 0 <= weight <= MAX_WEIGHT:
            raise InvalidInput(
                "invalid_argument",
                code="invalid_argument",
                field="weight",
                detail=f"weight must be between 0 and {MAX_WEIGHT:,} (0 parks the route), got {weight}",
            )
        plan_row = self._plan_row(plan)
        found = call(
            lambda: self.client.table("upstreams").select("id,name").eq("name", upstream).execute()
        ).data
        if not found:
            raise NotFound(
                "upstream_not_found",
                code="upstream_not_found",
                detail=f"no upstream {upstream}; add it with `tokenmeter upstreams set`",
            )
        row = {
            "plan_id": plan_row["id"],
            "upstream_id": found[0]["id"],
            "model": model,
            "weight": weight,
        }
        data = call(
            lambda: (
                self.client.table("plan_routes")
                .upsert(row, on_conflict="plan_id,upstream_id,model")
                .execute()
            )
        ).data
        return PlanRoute.model_validate({**data[0], "upstream": upstream})

    def _plan_row(self, name: str) -> dict[str, Any]:
        rows = call(lambda: self.client.table("plans").select("*").eq("name", name).execute()).data
        if not rows:
            raise NotFound("plan_not_found", code="plan_not_found", detail=f"no plan {name}")
        return rows[0]

    def _with_routes(self, plans: Iterable[dict[str, Any]]) -> list[Plan]:
        plans = list(plans)
        if not plans:
            return []
        # The local stack (like plain PostgREST without FKs in its cache) may not embed: three
        # reads instead of one join.
        routes = call(
            lambda: (
                self.client.table("plan_routes")
                .select("*")
                .in_("plan_id", [p["id"] for p in plans])
                .order("model")
                .order("id")
                .execute()
            )
        ).data
        names = {
            u["id"]: u["name"]
            for u in call(lambda: self.client.table("upstreams").select("id,name").execute()).data
        }
        by_plan: dict[str, list[PlanRoute]] = {}
        for r in routes:
            route = PlanRoute.model_validate({**r, "upstream": names.get(r["upstream_id"], "?")})
            by_plan.setdefault(route.plan_id, []).append(route)
        return [Plan.model_validate({**p, "routes": by_plan.get(p["id"], [])}) for p in plans]


__all__ = ["Plans"]
