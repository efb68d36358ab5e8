pub mod mqttsn;
