//! Line-based serial sensors: GPS receivers (NMEA 0183), weather and particulate
//! sensors, scales and Arduino sketches that print lines on a UART or USB serial port.

pub mod framer;
pub mod parse;
pub mod config;
