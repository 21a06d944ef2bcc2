// Package model is the plaintext neural network of the federated-learning
// example: TF Encrypted's 784 → 512 sigmoid → 10 perceptron with softmax
// cross-entropy loss (407,050 float64 parameters), trained by plain SGD.
//
// Parameters travel as four *tensor.Dense values, always in the order W1
// (Inputs×Hidden), b1 (Hidden), W2 (Hidden×Classes), b2 (Classes); see
// Architecture.ParamShapes and ParamName. Architecture.Init draws them from
// an explicit random source (Glorot uniform weights, zero biases).
//
// A data owner computes the mean-loss gradient of a batch with a Trainer,
// which wraps a gorgonia expression graph and tape machine built once and
// reused for every batch:
//
//	a := model.TFE()
//	params, _ := a.Init(rand.New(rand.NewPCG(seed, 0)))
//	tr, _ := model.NewTrainer(a, 30)
//	defer tr.Close()
//	loss, grads, err := tr.Gradients(params, model.Batch{X: pixels, Labels: labels})
//
// The model owner applies the (securely averaged) gradient with SGD and
// measures progress with Evaluate, Predict or Logits, which run the same
// network in plain Go on gonum BLAS, in chunks, and agree with the gorgonia
// forward pass to rounding error.
//
// Every function validates its inputs (tensor count, dtype, shape, finite
// values, label range) and returns an error naming the offending tensor;
// none panics on bad input.
package model
