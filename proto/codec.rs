//! A prost codec whose decode errors are `INVALID_ARGUMENT`.
//!
//! tonic's stock `ProstCodec` maps a decode error to `INTERNAL`, which tells an
//! OTLP client the server is broken and makes it retry. Malformed protobuf is
//! the client's fault and must not be retried, so it is `INVALID_ARGUMENT`.

use std::marker::PhantomData;

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

/// A decoded request and its size on the wire (after decompression), which
/// the collector charges against its memory budget without re-measuring.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<M> {
    pub message: M,
    pub wire_len: usize,
}

impl<T, U> Codec for OtlpCodec<T, Decoded<U>>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = Decoded<U>;
    type Encoder = OtlpEncoder<T>;
    type Decoder = OtlpDecoder<Decoded<U>>;

    fn encoder(&mut self) -> Self::Encoder {
        OtlpEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        OtlpDecoder(PhantomData)
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

#[derive(Debug)]
pub struct OtlpDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for OtlpDecoder<Decoded<U>> {
    type Item = Decoded<U>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Decoded<U>>, Status> {
        use bytes::Buf;
        let wire_len = buf.remaining();
        U::decode(buf)
            .map(|message| Some(Decoded { message, wire_len }))
            .map_err(|e| Status::invalid_argument(format!("malformed protobuf: {e}")))
    }
}
