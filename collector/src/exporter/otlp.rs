//! `otlp`: forwards batches over OTLP/gRPC on one reused HTTP/2 connection.
//!
//! Telemetry that arrived as valid protobuf is sent on as the bytes it
//! arrived in (batching concatenates them; nothing is re-encoded); decoded
//! telemetry (after a processor) is encoded for each attempt. Which errors are retried follows the OTLP specification: UNAVAILABLE,
//! CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE and DATA_LOSS always;
//! RESOURCE_EXHAUSTED only when the server sent a `RetryInfo`, whose delay is
//! then honoured.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use super::ExportError;
use crate::config::{ClientTlsConfig, Compression, OtlpExporterConfig};
use crate::encoded::Telemetry;

#[derive(Debug)]
pub struct OtlpExporter {
    channel: Channel,
    endpoint: String,
    timeout: Duration,
    headers: MetadataMap,
    compression: Option<CompressionEncoding>,
}

impl OtlpExporter {
    pub fn new(config: &OtlpExporterConfig) -> anyhow::Result<Self> {
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if config.endpoint.starts_with("https://") {
            endpoint = endpoint.tls_config(client_tls(config.tls.as_ref())?)?;
        }
        let channel = endpoint.connect_lazy();
        let mut headers = MetadataMap::new();
        for (k, v) in &config.headers {
            headers.insert(MetadataKey::from_bytes(k.as_bytes())?, MetadataValue::try_from(v.as_str())?);
        }
        let compression = match config.compression {
            Compression::None => None,
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            Compression::Zstd => Some(CompressionEncoding::Zstd),
        };
        Ok(Self { channel, endpoint: config.endpoint.clone(), timeout: config.timeout, headers, compression })
    }

    pub async fn export(&self, data: &Telemetry) -> Result<(), ExportError> {
        let body = data.request_chunks();
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(1 << 20);
        if let Some(c) = self.compression {
            grpc = grpc.send_compressed(c);
        }
        grpc.ready()
            .await
            .map_err(|e| ExportError::retryable("unavailable", format!("connecting to {}: {e}", self.endpoint)))?;
        let mut request = Request::new(body);
        request.set_timeout(self.timeout);
        *request.metadata_mut() = self.headers.clone();
        let path = PathAndQuery::from_static(data.signal().grpc_path());
        let response =
            grpc.unary(request, path, RawCodec::default()).await.map_err(|s| classify(&self.endpoint, &s))?;
        match response.into_inner().partial_success {
            Some(p) if p.rejected_spans > 0 => Err(ExportError::permanent(
                "rejected_by_peer",
                format!("{} rejected {} items: {}", self.endpoint, p.rejected_spans, p.error_message),
            )),
            _ => Ok(()),
        }
    }
}

fn client_tls(config: Option<&ClientTlsConfig>) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    let mut tls = tonic::transport::ClientTlsConfig::new();
    let Some(config) = config else { return Ok(tls.with_native_roots()) };
    let read = |path: &str| std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {path}: {e}"));
    tls = match &config.ca_file {
        Some(ca) => tls.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        tls = tls.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(name) = &config.server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(tls)
}

/// Maps a gRPC status to a retryable or permanent error (OTLP spec rules).
pub fn classify(endpoint: &str, status: &Status) -> ExportError {
    let retry_after = status.get_details_retry_info().and_then(|r| r.retry_delay);
    let retryable = match status.code() {
        Code::Unavailable
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => true,
        Code::ResourceExhausted => retry_after.is_some(),
        _ => false,
    };
    let reason = match status.code() {
        Code::Unavailable => "unavailable",
        Code::ResourceExhausted => "resource_exhausted",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::InvalidArgument => "invalid_argument",
        Code::PermissionDenied | Code::Unauthenticated => "denied",
        _ => "error",
    };
    ExportError {
        message: format!("{endpoint} answered {:?}: {}", status.code(), status.message()),
        retryable,
        retry_after,
        reason,
    }
}

/// Sends a pre-encoded request, given as chunks to write in order; decodes any of the three Export responses
/// (they share one wire shape: field 1 is the partial success with the
/// rejected count in field 1 and the message in field 2).
#[derive(Debug, Default)]
pub struct RawCodec(PhantomData<()>);

impl Codec for RawCodec {
    type Encode = Vec<Bytes>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

#[derive(Debug)]
pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<Bytes>;
    type Error = Status;

    fn encode(&mut self, item: Vec<Bytes>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        for chunk in item {
            dst.put(chunk);
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src).map(Some).map_err(|e| Status::internal(format!("bad response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn resource_exhausted_is_retried_only_with_retry_info() {
        let plain = Status::resource_exhausted("busy");
        assert!(!classify("x", &plain).retryable);
        let with_info = Status::with_error_details(
            Code::ResourceExhausted,
            "busy",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(1500))),
        );
        let e = classify("x", &with_info);
        assert!(e.retryable);
        assert_eq!(e.retry_after, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn invalid_argument_is_permanent_and_unavailable_is_not() {
        assert!(!classify("x", &Status::invalid_argument("bad")).retryable);
        assert!(classify("x", &Status::unavailable("down")).retryable);
    }
}
