//! Serves a consumer's metrics and health over HTTP (`--metrics_addr`).

use std::net::SocketAddr;
use std::sync::Arc;

use runner::metrics::Metrics;

/// Binds `addr` (port 0 picks a free one) and serves, until the process ends:
/// `GET /metrics`; `GET /healthz`, 200 while the process serves at all (liveness);
/// `GET /readyz`, 200 once the consumer is pulling and 503 before that, while it
/// drains, and while Pub/Sub does not answer (readiness; see `Metrics::is_ready`). A bind that fails is an error, returned at once: a consumer whose
/// metrics were asked for must not run without them unnoticed.
pub async fn serve(metrics: Arc<Metrics>, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving metrics on /metrics, health on /healthz and /readyz");
    let rendered = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || async move {
                let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                ([(axum::http::header::CONTENT_TYPE, content_type)], rendered.render())
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                if metrics.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not pulling, or Pub/Sub does not answer\n")
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });
    Ok(bound)
}
