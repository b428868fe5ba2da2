module github.com/ckpt-dev/ckpt/tools/pause

go 1.25.0
