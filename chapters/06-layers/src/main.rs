//! `ch06`: images and containers made from them.

fn main() {}
