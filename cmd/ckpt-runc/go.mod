module github.com/ckpt-dev/ckpt/cmd/ckpt-runc

go 1.24
