"""Recurrent layers: RNN, LSTM and LSTMUnit, with Caffe's unrolled semantics."""
