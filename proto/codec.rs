//! The codec of the OTLP collector services: requests are handed over as the
//! bytes they arrived as (decompressed), responses are encoded with prost.
//!
//! The collector walks the bytes with [`crate::wire::scan`] and decodes only
//! what is not plainly valid, so the codec must not decode. It also decides
//! the status of malformed protobuf itself: `INVALID_ARGUMENT`, which OTLP
//! clients do not retry (tonic's stock codec says `INTERNAL`, which they do).

use std::marker::PhantomData;

use bytes::{Buf, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

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
}

/// Takes the message's bytes out of tonic's receive buffer without copying.
#[derive(Debug)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}
