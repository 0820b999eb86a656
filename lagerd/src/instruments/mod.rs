//! Instruments: the transport boundary (`transport.rs`) where hardware, or
//! the simulator, plugs in. Nothing above the transport knows which it is.

pub mod sim;
pub mod transport;
