//! The gRPC codec of Palisade's services: prost's, with small initial
//! buffers. Each open stream keeps an encode and a decode buffer for its
//! whole life, and tonic's default (8 KiB each) was a quarter of the
//! manager's memory per idle agent in a fleet of ten thousand; a
//! heartbeat, an acknowledgement or a command fits in far less, and the
//! buffers still grow to the largest message when one comes: the decoder
//! reserves a message's whole length once its 5-byte header is read (a
//! batch of 2,000 lines grows it once, whatever it started at), the
//! encoder doubles as prost writes.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode and decode buffer of a call or stream: room for an idle
/// stream's messages (heartbeats, acknowledgements, commands are tens of
/// bytes). 1 KiB each was 2 KiB of the manager's memory per idle agent.
pub const INITIAL_BUFFER: usize = 256;
/// Encoded bytes after which a streaming encoder yields (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD)
}

/// Prost's codec with [`INITIAL_BUFFER`]-byte buffers; the generated
/// clients and servers use it (`codec_path` in the generator).
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
