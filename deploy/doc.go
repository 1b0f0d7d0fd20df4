// Package deploy holds what the deb and rpm packages install besides the
// binary: the systemd unit, its settings file and the maintainer scripts.
// Its tests run the scripts against a temporary root.
package deploy
