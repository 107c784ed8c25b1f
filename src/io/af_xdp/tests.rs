use super::*;

#[test]
fn options_are_checked() {
    assert!(check(&AfXdpOptions::default()).is_ok());
    let bad = |o: AfXdpOptions| check(&o).is_err();
    assert!(bad(AfXdpOptions {
        frame_size: 3000,
        ..Default::default()
    }));
    assert!(bad(AfXdpOptions {
        rx_size: 1000,
        ..Default::default()
    }));
    assert!(bad(AfXdpOptions {
        frame_count: 2048,
        ..Default::default()
    }));
    assert!(bad(AfXdpOptions {
        pool_size: 0,
        ..Default::default()
    }));
}
