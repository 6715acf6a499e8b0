-- 20251018000011_create_estimate_and_lookup_functions.sql
--
-- Two read-only helpers for the Python service and the CLI:
--   * estimate_cost(): the most a call can cost, computed by the SAME formula that charges it
--     (private.usage_cost over private.chargeable_price), so an estimate never drifts from the
--     charge. Used to size reservations before a provider call.
--   * user_id_for_email(): resolves a user by email for operators (CLI `--user EMAIL`).
-- Error codes: see the catalog at the top of 20251018000005_create_pricing_functions.sql.

-- public.estimate_cost(model, input_tokens, max_output_tokens, provider = null,
-- cached_input_tokens = 0) → {provider, model, input_tokens, max_output_tokens, cost, currency}.
-- Who may call: anon, authenticated, service_role (prices are public). DEFINER so that callers
-- need no access to the private schema's cost helpers; it reads only the public price list, so
-- there is no caller to check.
-- Raises: 22023 invalid_usage (token counts, model), PT422 unknown_model / ambiguous_model /
-- price_missing.
create function public.estimate_cost(
  model text, input_tokens bigint, max_output_tokens bigint, provider text default null,
  cached_input_tokens bigint default 0
) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  price public.model_pricing;
begin
  if estimate_cost.input_tokens is null or estimate_cost.input_tokens not between 0 and 10000000
  then
    raise exception using errcode = '22023', message = 'invalid_usage',
      detail = 'input_tokens must be an integer between 0 and 10000000';
  end if;
  if estimate_cost.max_output_tokens is null
     or estimate_cost.max_output_tokens not between 0 and 10000000 then
    raise exception using errcode = '22023', message = 'invalid_usage',
      detail = 'max_output_tokens must be an integer between 0 and 10000000';
  end if;
  if estimate_cost.cached_input_tokens is null or estimate_cost.cached_input_tokens < 0
     or estimate_cost.cached_input_tokens > estimate_cost.input_tokens then
    raise exception using errcode = '22023', message = 'invalid_usage',
      detail = 'cached_input_tokens must be between 0 and input_tokens';
  end if;
  price := private.chargeable_price(estimate_cost.provider, estimate_cost.model, now());
  return jsonb_build_object(
    'provider', price.provider_id, 'model', price.model_id,
    'input_tokens', estimate_cost.input_tokens,
    'max_output_tokens', estimate_cost.max_output_tokens,
    'cost', private.money(private.usage_cost(price, estimate_cost.input_tokens,
                                             estimate_cost.max_output_tokens,
                                             estimate_cost.cached_input_tokens)),
    'currency', price.currency);
end
$$;

-- public.user_id_for_email(email) → the user's id (text). Who may call: service_role.
-- DEFINER: auth.users is not readable by API roles. Raises: 42501 forbidden,
-- 22023 invalid_argument, PT404 user_not_found.
create function public.user_id_for_email(email text) returns text
language plpgsql stable security definer set search_path = '' as $$
declare
  found_id uuid;
begin
  perform private.assert_service_role();
  perform private.check_text('email', user_id_for_email.email);
  select u.id into found_id from auth.users u
  where lower(u.email) = lower(btrim(user_id_for_email.email)) and u.deleted_at is null;
  if found_id is null then
    raise exception using errcode = 'PT404', message = 'user_not_found',
      detail = format('no user with email %s', user_id_for_email.email);
  end if;
  return found_id::text;
end
$$;

-- ── Grants ─────────────────────────────────────────────────────────────────────────────────
revoke execute on function public.estimate_cost(text, bigint, bigint, text, bigint) from public;
grant execute on function public.estimate_cost(text, bigint, bigint, text, bigint)
  to anon, authenticated, service_role;

revoke execute on function public.user_id_for_email(text) from public;
grant execute on function public.user_id_for_email(text) to service_role;
