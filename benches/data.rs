//! Getting a training batch onto the device: gathering it from the device-resident u8 set with one
//! kernel, against converting it to f32 on the CPU and uploading it each step. Images per second
//! (criterion's element rate), the adapter in the benchmark id, the device synchronised inside the
//! timed region.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netmorph::data::{BatchOrder, DeviceDataset, ImageSet};
use netmorph::{Device, Tensor};

fn bench(c: &mut Criterion) {
    let dev = Device::shared().expect("adapter");
    let (n, batch) = (60_000, 128);
    // MNIST-sized synthetic bytes: the figures do not depend on the pixel values.
    let images: Vec<u8> = (0..n * 784).map(|i| ((i * 2_654_435_761usize) >> 13) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let set = ImageSet::new(images, labels, 1, 28, 28, 10).unwrap();
    let start = std::time::Instant::now();
    let data = DeviceDataset::new(&dev, &set).unwrap();
    dev.sync().unwrap();
    eprintln!("uploading {n} u8 images ({} MB): {:.1} ms", n * 784 / 1_000_000, start.elapsed().as_secs_f64() * 1e3);
    let order = BatchOrder::new(n, batch, 1).unwrap().epoch(0);

    let mut group = c.benchmark_group(format!("data/{}", dev.bench_id()));
    group.sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    group.throughput(Throughput::Elements(batch as u64));
    let mut step = 0;
    group.bench_function(format!("batch{batch}/gather_u8_on_device"), |b| {
        b.iter(|| {
            let (x, y) = data.batch(&order[step % order.len()]).unwrap();
            step += 1;
            dev.sync().unwrap();
            (x, y)
        })
    });
    group.bench_function(format!("batch{batch}/upload_f32_from_cpu"), |b| {
        b.iter(|| {
            let indices = &order[step % order.len()];
            step += 1;
            let x = Tensor::from_slice(&dev, &set.gather_f32(indices), &[indices.len(), 1, 28, 28]).unwrap();
            let labels: Vec<u32> = indices.iter().map(|&i| set.labels[i as usize] as u32).collect();
            let y = Tensor::from_u32(&dev, &labels, &[indices.len()]).unwrap();
            dev.sync().unwrap();
            (x, y)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
