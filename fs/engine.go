package fs

import "errors"

func newEnginePath() (dataPath, error) {
	return nil, errors.New("engine: the io_uring data path is not built yet")
}
