// The second version of the hot-loading fixture (see fx-hot-v1).
include!("../../fx-hot-v1/src/lib.rs");
