package bench

import (
	"math"
	"sort"
)

// medianOf is the median of xs, or nil when there is nothing to take it of.
func medianOf(xs []float64) *float64 {
	if len(xs) == 0 {
		return nil
	}
	m := median(xs)
	return &m
}

// median returns the median of xs (the mean of the middle two for an even
// count), or NaN for no samples. It does not reorder xs.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid]
	}
	return (s[mid-1] + s[mid]) / 2
}

// speedup is how many times faster a figure is than a reference figure of the
// same unit: above 1 is faster. For throughputs that is the quotient, for
// durations its inverse, so that every ratio the bench prints reads the same
// way. It returns NaN when either figure is missing or not positive.
func speedup(value, ref float64, higherIsBetter bool) float64 {
	if !(value > 0) || !(ref > 0) || math.IsInf(value, 0) || math.IsInf(ref, 0) {
		return math.NaN()
	}
	if higherIsBetter {
		return value / ref
	}
	return ref / value
}
