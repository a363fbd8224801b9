//! OpenTelemetry traces: a server span for every client request (continuing the client's W3C
//! trace context, or starting a trace whose IDs become the request's, so that the request ID in
//! logs and audit records names the span), a child span per pipeline stage, and a client span
//! for the call to the MCP server, whose context is what the server receives as `traceparent`.
//! Spans are exported over OTLP/HTTP by the SDK's batch processor on its own thread; without
//! `tracing` in the config every span here is a no-op and the trace context is still passed on.

use std::borrow::Cow;
use std::time::Duration;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use palisade_core::config::TracingConfig;

use super::trace::TraceContext;

/// How long finished spans wait before they are sent (the SDK's default is 5 s).
const EXPORT_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("cannot set up trace export: {0}")]
pub struct TelemetryError(String);

/// The gateway's tracer, when traces are exported.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Telemetry {
    /// A tracer exporting to `cfg.otlp_endpoint`, its spans naming `server` (`namespace/name`).
    pub fn new(cfg: &TracingConfig, server: &str) -> Result<Telemetry, TelemetryError> {
        let endpoint = format!("{}/v1/traces", cfg.otlp_endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TelemetryError(e.to_string()))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default().with_scheduled_delay(EXPORT_DELAY).build(),
            )
            .build();
        let ratio = cfg.sample_ratio.clamp(0.0, 1.0);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
            .with_resource(
                Resource::builder()
                    .with_service_name("palisade-gateway")
                    .with_attribute(KeyValue::new("palisade.server", server.to_string()))
                    .build(),
            )
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "palisade-gateway");
        Ok(Telemetry { provider, tracer })
    }

    /// Sends what is buffered and stops the exporter.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }

    /// The server span of one request, and the trace context the request goes on with: the
    /// client's, or, for a trace started here, the new span's own IDs.
    pub fn request(&self, trace: &TraceContext, method: &str) -> (RequestSpan, TraceContext) {
        let parent = match (trace.from_client, remote(trace)) {
            (true, Some(sc)) => Context::new().with_remote_span_context(sc),
            _ => Context::new(),
        };
        let builder = self
            .tracer
            .span_builder(format!("mcp {method}"))
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("mcp.method.name", method.to_string())]);
        let span = self.tracer.build_with_context(builder, &parent);
        let trace = if trace.from_client {
            trace.clone()
        } else {
            let sc = span.span_context();
            TraceContext {
                trace_id: sc.trace_id().to_string(),
                parent_id: sc.span_id().to_string(),
                flags: format!("{:02x}", sc.trace_flags().to_u8()),
                from_client: false,
            }
        };
        let span =
            RequestSpan { cx: Some(parent.with_span(span)), tracer: Some(self.tracer.clone()) };
        (span, trace)
    }
}

fn remote(t: &TraceContext) -> Option<SpanContext> {
    let flags = u8::from_str_radix(&t.flags, 16).ok()?;
    Some(SpanContext::new(
        TraceId::from_hex(&t.trace_id).ok()?,
        SpanId::from_hex(&t.parent_id).ok()?,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// A request's server span (or nothing, when traces are not exported); it ends when dropped.
#[derive(Default)]
pub struct RequestSpan {
    cx: Option<Context>,
    tracer: Option<SdkTracer>,
}

impl RequestSpan {
    pub fn none() -> RequestSpan {
        RequestSpan::default()
    }

    fn child(&self, name: &'static str, kind: SpanKind) -> StageSpan {
        match (&self.cx, &self.tracer) {
            (Some(cx), Some(tracer)) => {
                let b = tracer.span_builder(Cow::Borrowed(name)).with_kind(kind);
                StageSpan(Some(tracer.build_with_context(b, cx)))
            }
            _ => StageSpan(None),
        }
    }

    /// A stage of the pipeline (validate, authorize, rate, tool gate, ...).
    pub fn stage(&self, name: &'static str) -> StageSpan {
        self.child(name, SpanKind::Internal)
    }

    /// The call to the MCP server; its context is the `traceparent` the server gets.
    pub fn upstream(&self) -> StageSpan {
        self.child("upstream", SpanKind::Client)
    }

    /// Whether spans are exported (attributes are worth computing).
    pub fn enabled(&self) -> bool {
        self.cx.is_some()
    }

    /// Adds an attribute to the server span.
    pub fn set(&self, key: &'static str, value: String) {
        if let Some(cx) = &self.cx {
            cx.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the request refused or failed.
    pub fn fail(&self, why: &str) {
        if let Some(cx) = &self.cx {
            cx.span().set_status(Status::error(why.to_string()));
        }
    }
}

/// A child span; it ends when dropped.
pub struct StageSpan(Option<opentelemetry_sdk::trace::Span>);

impl StageSpan {
    /// The W3C `traceparent` naming this span as the parent of the next hop.
    pub fn traceparent(&self) -> Option<String> {
        let sc = self.0.as_ref()?.span_context().clone();
        Some(format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
    }

    pub fn fail(&mut self, why: &str) {
        if let Some(s) = self.0.as_mut() {
            s.set_status(Status::error(why.to_string()));
        }
    }

    pub fn set(&mut self, key: &'static str, value: String) {
        if let Some(s) = self.0.as_mut() {
            s.set_attribute(KeyValue::new(key, value));
        }
    }
}
