// Package gateway is repro's LLM gateway for agent runs: an OpenAI-compatible
// proxy (POST /v1/chat/completions, GET /v1/models) that an agent container
// reaches with a token scoped to its agent run. The agent never sees the
// provider key.
//
// # Request path
//
//  1. Auth: "Authorization: Bearer <token>" is resolved to a [Session] by the
//     configured [Resolver]; a missing or unknown token is answered 401 with an
//     OpenAI-style error (code "invalid_api_key"). The agent's Authorization
//     header is never forwarded.
//  2. Validation: the body (at most Config.MaxRequestBytes, default 4 MiB,
//     else 413) must be a JSON object with "model" (a string the session's
//     endpoint allows) and "messages" (a non-empty array); "stream" must be a
//     boolean, "max_tokens", "max_completion_tokens" and "n" integers. Any
//     violation is a 400 naming the field (param).
//  3. Budget: if the agent run's metered usage has reached Budget.MaxTokens
//     (total tokens) or Budget.MaxCostUSD, the call is refused with 429, code
//     "budget_exceeded", a message naming the limit and the usage, and the
//     header "X-Should-Retry: false" (honoured by the official OpenAI SDKs).
//  4. Capping: otherwise the completion length is capped so that it cannot
//     exceed what is left: cap = remaining tokens (MaxTokens - used), and, when
//     a cost budget is set and the endpoint has a completion price, at most
//     the number of completion tokens the remaining cost buys; divided by "n"
//     when n > 1. A "max_tokens" or "max_completion_tokens" sent by the agent
//     that is larger than the cap is lowered to it. If the agent sent neither,
//     the gateway adds Endpoint.MaxTokensField (default "max_tokens") = cap,
//     but only when cap <= Endpoint.MaxOutputTokens (default 4096): providers
//     reject limits above a model's output limit, and above it the model's own
//     limit is what bounds the reply. The cap does not account for the prompt.
//  5. Forwarding: a fresh request goes to Endpoint.BaseURL + "/chat/completions"
//     with only Content-Type (application/json), Accept (if the agent sent
//     one), a fixed User-Agent and "Authorization: Bearer <Endpoint.APIKey>".
//     No other incoming header (Cookie, hop-by-hop, X-Forwarded-*, ...) and no
//     query string is forwarded. The body is forwarded byte for byte unless the
//     gateway had to change it (cap, stream_options), in which case it is
//     re-encoded (same fields, keys sorted). Redirects are not followed.
//  6. Metering: the reply's "usage" (prompt_tokens, completion_tokens,
//     total_tokens; total = max(total_tokens, prompt+completion)) is added to
//     the agent run through the [Meter] with cost = prompt*PromptPricePerMTok/1e6
//     + completion*CompletionPricePerMTok/1e6. If the reply carries no usage,
//     it is estimated as ceil(bytes/4): prompt from the JSON of "messages",
//     completion from the JSON of the reply's "choices" (summed over all chunks
//     for a stream), and the exchange is marked usage_estimated. Every
//     forwarded request counts in Usage.Requests, including failed ones (which
//     add no tokens); refused and invalid requests are not forwarded and not
//     metered. Metering and the trajectory use a context detached from the
//     agent's, so a client that hangs up mid-reply is still metered.
//  7. Upstream errors: transport errors and timeouts (Endpoint.Timeout, default
//     10 minutes, bounds the whole exchange including a stream) and 5xx/3xx
//     replies become 502 with a gateway error ("upstream_unavailable",
//     "upstream_timeout", "upstream_error"); the provider's body goes into the
//     trajectory only. Upstream 4xx replies are passed through with their
//     status and body.
//
// # Streaming
//
// "stream": true is supported. The gateway forces
// stream_options.include_usage=true so that the final chunk carries usage,
// passes the server-sent events through line by line (flushing at each event
// boundary) while parsing the data chunks, and meters the usage chunk. If the
// agent did not ask for include_usage itself, the extra usage-only chunk
// (empty "choices") is not passed on, so the agent sees what it asked for. A
// stream that ends without usage is estimated as above. If the upstream
// ignores "stream" and answers with plain JSON, that is passed on as such.
//
// # Concurrency and overshoot
//
// When a session has a budget (MaxTokens or MaxCostUSD > 0), the gateway
// serializes the agent run's calls with a per-agent-run lock held around
// check -> forward -> meter, so two concurrent calls can never both pass a
// check that only one should; waiting callers give up when their request is
// cancelled. Calls of runs without any budget are not serialized. The lock is
// per Gateway value (one process); sharing a Meter between several gateway
// processes voids this guarantee.
//
// Given that, the token budget can be overshot only by the last admitted
// call, by at most its prompt tokens (the completion is capped at the
// remaining tokens), provided the upstream honours max_tokens, and, for calls
// that send no limit while more than MaxOutputTokens remain, by whatever the
// model produces beyond the remainder. The cost budget can be overshot by the
// last admitted call's prompt cost in the same way.
//
// # Trajectory and logging
//
// Every exchange after authentication (including validation errors and budget
// refusals) is handed to the [Trajectory]; [FileTrajectory] appends it as one
// JSON line to <dir>/trajectory.jsonl. Provider keys (of 8 characters or more)
// are replaced by "[REDACTED]" in everything the gateway returns or records,
// in case a provider echoes them. Logging uses log/slog: one Info line per
// exchange with ids, model, status, token counts, cost and latency; never the
// key and never message bodies.
package gateway
