//! Ways to build graphs: a Keras-like sequential builder, AutoKeras's default CNN, a small
//! ResNet, and the seed's Keras MNIST convnet.

use super::{Graph, LayerId, Op, Padding, BN_EPS, BN_MOMENTUM};
use crate::error::Result;

/// A chain of layers, each fed by the previous one.
///
/// ```
/// # use netmorph::graph::Sequential;
/// let g = Sequential::new(&[1, 28, 28]).conv2d(32, 3).relu().max_pool(2).flatten().dense(10).build(7).unwrap();
/// assert_eq!(g.shape_of(g.output().id).unwrap(), vec![10]);
/// ```
pub struct Sequential {
    graph: Graph,
    last: LayerId,
}

impl Sequential {
    pub fn new(input_shape: &[usize]) -> Sequential {
        Sequential { graph: Graph::new(input_shape), last: LayerId(0) }
    }
    pub fn layer(mut self, op: Op) -> Sequential {
        self.last = self.graph.push(op, &[self.last]);
        self
    }
    /// Keras's `Conv2D(filters, kernel)`: stride 1, valid padding, with bias.
    pub fn conv2d(self, filters: usize, kernel: usize) -> Sequential {
        self.conv2d_with(filters, kernel, 1, Padding::Valid)
    }
    pub fn conv2d_with(self, filters: usize, kernel: usize, stride: usize, padding: Padding) -> Sequential {
        self.layer(Op::Conv2d { filters, kernel, stride, padding, bias: true })
    }
    pub fn batch_norm(self) -> Sequential {
        self.layer(Op::BatchNorm { momentum: BN_MOMENTUM, eps: BN_EPS })
    }
    pub fn relu(self) -> Sequential {
        self.layer(Op::Relu)
    }
    /// Keras's `MaxPooling2D(pool_size=k)`: stride k.
    pub fn max_pool(self, kernel: usize) -> Sequential {
        self.layer(Op::MaxPool { kernel, stride: kernel })
    }
    pub fn avg_pool(self, kernel: usize) -> Sequential {
        self.layer(Op::AvgPool { kernel, stride: kernel })
    }
    pub fn global_avg_pool(self) -> Sequential {
        self.layer(Op::GlobalAvgPool)
    }
    pub fn dense(self, units: usize) -> Sequential {
        self.layer(Op::Dense { units, bias: true })
    }
    pub fn dropout(self, rate: f32) -> Sequential {
        self.layer(Op::Dropout { rate })
    }
    pub fn flatten(self) -> Sequential {
        self.layer(Op::Flatten)
    }
    pub fn softmax(self) -> Sequential {
        self.layer(Op::Softmax)
    }
    /// The graph with freshly initialised weights, checked.
    pub fn build(mut self, seed: u64) -> Result<Graph> {
        self.graph.init_weights(seed)?;
        self.graph.validate()?;
        Ok(self.graph)
    }
}

/// AutoKeras 0.3's `CnnGenerator` defaults.
#[derive(Clone, Debug)]
pub struct CnnConfig {
    pub blocks: usize,
    pub width: usize,
    pub kernel: usize,
    pub dropout: f32,
    pub dense: usize,
}

impl Default for CnnConfig {
    fn default() -> Self {
        CnnConfig { blocks: 3, width: 64, kernel: 3, dropout: 0.25, dense: 64 }
    }
}

/// A small ResNet: a stem conv, then `stages` stages of `blocks` basic residual blocks (the width
/// doubles and the image halves at each new stage), global pooling and a dense classifier.
#[derive(Clone, Debug)]
pub struct ResNetConfig {
    pub width: usize,
    pub stages: usize,
    pub blocks: usize,
}

impl Default for ResNetConfig {
    fn default() -> Self {
        ResNetConfig { width: 16, stages: 2, blocks: 1 }
    }
}

impl Graph {
    /// AutoKeras's default CNN: `blocks` times (ReLU, batch norm, `kernel`x`kernel` same conv of
    /// `width` filters, 2x2 max pool while the image is at least 2x2), then global average pooling,
    /// dropout, dense `dense`, ReLU and a dense layer to the classes (logits).
    pub fn cnn(input: &[usize], classes: usize, cfg: &CnnConfig, seed: u64) -> Result<Graph> {
        let mut s = Sequential::new(input);
        let (mut h, mut w) = (input.get(1).copied().unwrap_or(1), input.get(2).copied().unwrap_or(1));
        for _ in 0..cfg.blocks {
            s = s.relu().batch_norm().conv2d_with(cfg.width, cfg.kernel, 1, Padding::Same);
            if h >= 2 && w >= 2 {
                s = s.max_pool(2);
                (h, w) = (h / 2, w / 2);
            }
        }
        s.global_avg_pool().dropout(cfg.dropout).dense(cfg.dense).relu().dense(classes).build(seed)
    }

    /// A small ResNet (see [`ResNetConfig`]). Each block's residual path is its main path (input 0
    /// of the add); the shortcut is the skip (a strided 1x1 conv and batch norm where the shape
    /// changes).
    pub fn resnet(input: &[usize], classes: usize, cfg: &ResNetConfig, seed: u64) -> Result<Graph> {
        let mut g = Graph::new(input);
        let conv = |filters, kernel, stride| Op::Conv2d { filters, kernel, stride, padding: Padding::Same, bias: false };
        let bn = || Op::BatchNorm { momentum: BN_MOMENTUM, eps: BN_EPS };
        let mut x = g.push(conv(cfg.width, 3, 1), &[LayerId(0)]);
        x = g.push(bn(), &[x]);
        x = g.push(Op::Relu, &[x]);
        let mut channels = cfg.width;
        for stage in 0..cfg.stages {
            let width = cfg.width << stage;
            for block in 0..cfg.blocks {
                let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                let mut y = g.push(conv(width, 3, stride), &[x]);
                y = g.push(bn(), &[y]);
                y = g.push(Op::Relu, &[y]);
                y = g.push(conv(width, 3, 1), &[y]);
                y = g.push(bn(), &[y]);
                let shortcut = if stride != 1 || channels != width {
                    let s = g.push(conv(width, 1, stride), &[x]);
                    g.push(bn(), &[s])
                } else {
                    x
                };
                let sum = g.push(Op::Add, &[y, shortcut]);
                x = g.push(Op::Relu, &[sum]);
                channels = width;
            }
        }
        x = g.push(Op::GlobalAvgPool, &[x]);
        g.push(Op::Dense { units: classes, bias: true }, &[x]);
        g.init_weights(seed)?;
        g.validate()?;
        Ok(g)
    }

    /// The seed's Keras MNIST convnet: Conv 32 3x3 ReLU, Conv 64 3x3 ReLU, MaxPool 2, Dropout 0.25,
    /// Flatten, Dense 128 ReLU, Dropout 0.5, Dense to the classes (logits; the loss applies softmax).
    pub fn keras_mnist_convnet(input: &[usize], classes: usize, seed: u64) -> Result<Graph> {
        Sequential::new(input)
            .conv2d(32, 3)
            .relu()
            .conv2d(64, 3)
            .relu()
            .max_pool(2)
            .dropout(0.25)
            .flatten()
            .dense(128)
            .relu()
            .dropout(0.5)
            .dense(classes)
            .build(seed)
    }
}
