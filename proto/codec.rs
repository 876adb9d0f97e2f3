//! The codec of the OTLP collector services: requests are handed over as the
//! bytes they arrived as (decompressed), responses are encoded with prost.
//!
//! The collector walks the bytes with [`crate::wire::scan`] and decodes only
//! what is not plainly valid, so the codec must not decode. It also decides
//! the status of malformed protobuf itself: `INVALID_ARGUMENT`, which OTLP
//! clients do not retry (tonic's stock codec says `INTERNAL`, which they do).

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

#[derive(Debug)]
pub struct OtlpCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for OtlpCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T: Message + Send + 'static> Codec for OtlpCodec<T, Bytes> {
    type Encode = T;
    type Decode = Bytes;
    type Encoder = OtlpEncoder<T>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        OtlpEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

#[derive(Debug)]
pub struct OtlpEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for OtlpEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf).map_err(|e| Status::internal(format!("encoding response: {e}")))
    }

    /// Export responses are a few bytes (empty, or a partial success): no
    /// need for tonic's 8 KiB default buffer per response.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(256, 32 * 1024)
    }
}

/// Takes the message out of tonic's receive buffer. tonic reserves a
/// buffer for the announced message length, so a large message fills its
/// buffer and is taken as a slice of it, without a copy. A small one is
/// copied into an allocation of its own size: a slice would keep the whole
/// buffer (8 KiB at least) alive while it waits in a batch, and the collector
/// charges its budget the message's size.
#[derive(Debug)]
pub struct RawDecoder;

/// Messages from this size on are taken as a slice of the receive buffer.
const SLICE_FROM: usize = 32 * 1024;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = buf.remaining();
        if len >= SLICE_FROM {
            return Ok(Some(buf.copy_to_bytes(len)));
        }
        let mut message = Vec::with_capacity(len);
        message.put(buf);
        Ok(Some(message.into()))
    }
}
